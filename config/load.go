package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Load reads, checks and completes the configuration file at path.
// See Parse for what comes back.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse reads a configuration from data; name is used in messages. It
// parses the YAML, expands ${VAR} in string values, decodes strictly,
// applies defaults and validates the common schema (IdP `config:` blocks
// stay raw for cmd/usher).
//
// The error, when not nil, is an Errors value listing every problem with
// its position. When the file is valid YAML the Config is returned even
// alongside such errors, so that `usher check` can add the problems of the
// provider blocks and report everything at once; callers must not use it
// otherwise. On a YAML syntax error, or when the document is not a mapping,
// the Config is nil.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, os.LookupEnv)
}

func parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	f, err := parseYAML(data)
	if err != nil {
		return nil, Errors{syntaxError(name, err)}
	}
	src := &source{file: name, anchors: map[string]ast.Node{}}
	var errs Errors
	if len(f.Docs) > 1 {
		line, col := position(f.Docs[1])
		errs = append(errs, Error{File: name, Line: line, Column: col, Msg: "a configuration file holds one YAML document, found several"})
	}
	if len(f.Docs) > 0 && f.Docs[0].Body != nil {
		src.root = f.Docs[0].Body
	}
	cfg := &Config{src: src}
	root, _ := resolve(src.root, src.anchors)
	if _, isMap := entries(root, src.anchors); !isNull(root) && !isMap {
		line, col := position(src.root)
		errs = append(errs, Error{File: name, Line: line, Column: col, Msg: "want a mapping of settings (server, session, apps, idps, ...), got " + kindOf(src.root)})
		return nil, errs.Err()
	}
	if src.root != nil {
		collectAnchors(src.root, src.anchors)
		expandEnv(src.root, "", lookupEnv, func(n ast.Node, path, msg string) {
			line, col := position(n)
			errs = append(errs, Error{File: name, Path: path, Line: line, Column: col, Msg: msg})
		})
		d := &decoder{src: src}
		d.decode(src.root, "", reflect.ValueOf(cfg).Elem())
		errs = append(errs, d.errs...)
	}
	cfg.src = src // decoding a null document zeroes the struct
	applyDefaults(cfg)
	// A value that failed to decode is left zero or partial; complaints
	// about it, or about what holds it, would only repeat the first error.
	for _, v := range cfg.Validate() {
		dup := false
		for _, e := range errs {
			if e.Path != "" && (covers(e.Path, v.Path) || covers(v.Path, e.Path)) {
				dup = true
				break
			}
		}
		if !dup {
			errs = append(errs, v)
		}
	}
	return cfg, errs.sorted().Err()
}

// parseYAML guards against panics in the YAML library on hostile input:
// a configuration file must never crash usher, only be refused.
func parseYAML(data []byte) (f *ast.File, err error) {
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, fmt.Errorf("cannot parse YAML: %v", r)
		}
	}()
	return parser.ParseBytes(data, 0)
}

func syntaxError(name string, err error) Error {
	e := Error{File: name, Msg: err.Error()}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e.Msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
	}
	return e
}

// applyDefaults is the one place defaults live. It also drops a trailing
// "/" from public_url so that callers can append paths to it.
func applyDefaults(c *Config) {
	setDefault(&c.Server.Listen, ":8080")
	setDefault(&c.Server.DataDir, "./data")
	c.Server.PublicURL = strings.TrimSuffix(c.Server.PublicURL, "/")
	durationDefault(&c.Server.BodyReadTimeout, time.Minute)
	if c.Server.BodyMinRate == 0 {
		c.Server.BodyMinRate = 1024
	}
	if c.Server.MaxConnsPerClient == 0 {
		c.Server.MaxConnsPerClient = 256
	}

	setDefault(&c.Session.CookieName, "usher_session")
	durationDefault(&c.Session.IdleTimeout, 8*time.Hour)
	durationDefault(&c.Session.AbsoluteTimeout, 24*time.Hour)
	durationDefault(&c.Session.FlowTimeout, 10*time.Minute)

	setDefault(&c.Store.Driver, "sqlite")
	if c.Store.Driver == "sqlite" && c.Store.Path == "" {
		c.Store.Path = strings.TrimSuffix(c.Server.DataDir, "/") + "/usher.db"
	}
	durationDefault(&c.Store.Timeout, 5*time.Second)

	setDefault(&c.Headers.Username, "X-Remote-User")
	setDefault(&c.Headers.Email, "X-Remote-Email")
	setDefault(&c.Headers.DisplayName, "X-Remote-Name")
	setDefault(&c.Headers.Groups, "X-Remote-Groups")
	setDefault(&c.Headers.Encoding, "latin1")
	if c.Headers.SharedSecret != nil {
		setDefault(&c.Headers.SharedSecret.Header, "X-Usher-Secret")
	}

	for i := range c.Apps {
		a := &c.Apps[i]
		a.URL = strings.TrimSuffix(a.URL, "/")
		if a.SSO != nil {
			setDefault(&a.SSO.SigningAlg, "RS256")
			if a.SSO.RedirectURIs == nil && a.URL != "" && slices.Contains([]string{"jira", "confluence", "bitbucket"}, a.Kind) {
				a.SSO.RedirectURIs = []string{a.URL + AtlassianCallbackPath}
			}
		}
	}
	for i := range c.IdPs {
		idp := &c.IdPs[i]
		setDefault(&idp.Name, idp.ID)
		setDefault(&idp.Adoption, AdoptVerifiedEmail)
		// The type's own claim defaults are added where the type is
		// known (cmd/usher, from the provider's Config).
		idp.Mapping = idp.Mapping.WithDefaults(ClaimDefaults{})
		if idp.SCIM != nil {
			setDefault(&idp.SCIM.Subject, "externalId")
			if b := idp.SCIM.Brake; b != nil {
				durationDefault(&b.Window, time.Hour)
				setDefault(&b.HeldSessions, HeldSessionsRevoke)
			}
		}
	}
	for i := range c.Directories {
		d := &c.Directories[i]
		durationDefault(&d.FullEvery, 24*time.Hour)
		if d.GroupValues == "" {
			d.GroupValues = "names"
			if d.Type == "graph" {
				// Entra's tokens and assertions carry object IDs unless
				// the app registration says otherwise.
				d.GroupValues = "ids"
			}
		}
		if d.Concurrency == 0 {
			d.Concurrency = 4
		}
	}
	setDefault(&c.Store.Migrate, "auto")
	setDefault(&c.Admin.Listen, "127.0.0.1:9090")
	setDefault(&c.Log.Format, "auto")
	setDefault(&c.Log.Level, "info")
	p := &c.Provisioning
	durationDefault(&p.FastPath, time.Hour)
	setDefault(&p.OnAppDown, "allow_known")
	durationDefault(&p.Deadline, 5*time.Second)
	durationDefault(&p.Retry.Interval, 5*time.Second)
	durationDefault(&p.Retry.MinBackoff, 5*time.Second)
	durationDefault(&p.Retry.MaxBackoff, time.Hour)
	durationDefault(&p.Retry.ProbeEvery, 15*time.Second)
	if p.CreateGroups == nil {
		yes := true
		p.CreateGroups = &yes
	}
}

func setDefault(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

func durationDefault(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}
