package main

import (
	"fmt"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
)

// configWarnings are what a valid config may still get wrong: usher
// check prints them and serve logs them at start.
func configWarnings(cfg *config.Config) []string {
	var out []string
	mappers := make([]*jit.Mapper, len(cfg.IdPs))
	for i := range cfg.IdPs {
		m, err := mapperFor(cfg, i)
		if err != nil {
			return nil // loadConfig reports it
		}
		mappers[i] = m
	}
	for i := range cfg.IdPs {
		for j := i + 1; j < len(cfg.IdPs); j++ {
			if !jit.UsernamesMayOverlap(mappers[i], mappers[j]) {
				continue
			}
			a, b := cfg.IdPs[i], cfg.IdPs[j]
			w := fmt.Sprintf("idps %s and %s may give two people the same username: the second to sign in is refused (usernames are bound to one identity)", a.ID, b.ID)
			if a.Adoption != config.AdoptNever || b.Adoption != config.AdoptNever {
				w += fmt.Sprintf(", and an existing app account no usher identity owns goes to whichever signs in first and passes its adoption policy (%s: %s, %s: %s)",
					a.ID, a.Adoption, b.ID, b.Adoption)
			}
			w += `. Give the less trusted one a prefix (mapping.username.template: "ext-{{preferred_username}}") or adoption: never.`
			out = append(out, w)
		}
	}
	return out
}
