package main

import (
	"fmt"
	"strings"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/jit"
	"github.com/usherhq/usher/targets"
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
			w += `. Give the less trusted one a prefix (mapping.username.template: "ext-{{preferred_username}}")`
			if a.Adoption != config.AdoptNever && b.Adoption != config.AdoptNever {
				w += " or adoption: never"
			}
			w += "."
			out = append(out, w)
		}
	}
	return append(out, adoptionWarnings(cfg)...)
}

// adoptionWarnings name the apps where an IdP's verified_email adoption
// can never match an existing account, because the app does not tell its
// e-mail: there, everyone who already has an account is refused at their
// first sign-in until an admin links them.
func adoptionWarnings(cfg *config.Config) []string {
	var idps []string
	for _, idp := range cfg.IdPs {
		if idp.Adoption == config.AdoptVerifiedEmail {
			idps = append(idps, idp.ID)
		}
	}
	if len(idps) == 0 {
		return nil
	}
	var out []string
	for i, app := range cfg.Apps {
		tc, err := decodeTarget(cfg, i)
		if h, ok := tc.(targets.EmailHider); err != nil || !ok || !h.HidesEmails() {
			continue
		}
		out = append(out, fmt.Sprintf("app %s does not tell usher the e-mail of an account it already has, so idps %s (adoption: verified_email) cannot take such accounts over: "+
			"their owners are refused (\"Account not linked\") at their first sign-in. For the IdP whose usernames are those accounts' (the one the app's people sign in with today), "+
			"set adoption: always; or link people on the admin page's Users page.", app.Name, strings.Join(idps, ", ")))
	}
	return out
}
