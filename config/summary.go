package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/goccy/go-yaml"
)

// Summary describes the configuration for `usher check`: apps, IdPs
// (with the SCIM push each accepts) and the routing order. It shows no
// secrets.
func (c *Config) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "public URL %s, listening on %s, store %s\n", c.Server.PublicURL, c.Server.Listen, c.Store.Driver)

	fmt.Fprintf(&b, "\napps (%d):\n", len(c.Apps))
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	sso := false
	for _, a := range c.Apps {
		where := a.Upstream + "\t" + routeString(a.Route)
		switch {
		case a.Kind == KindCloud:
			where = "-\t(an Atlassian Cloud site)"
		case a.Upstream == "":
			where = a.URL + "\t(reached directly)"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", a.Name, a.Kind, a.Mode(), where)
		sso = sso || a.SSO != nil
	}
	w.Flush()
	if sso {
		fmt.Fprintf(&b, "\nOpenID Provider: issuer %s/usher/op\n", c.Server.PublicURL)
		w = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, a := range c.Apps {
			if a.SSO != nil {
				fmt.Fprintf(w, "  %s\tclient %s\t%s\tredirect %s\n", a.Name, a.SSO.ClientID, a.SSO.SigningAlg, strings.Join(a.SSO.RedirectURIs, " "))
			}
		}
		w.Flush()
	}

	fmt.Fprintf(&b, "\nidentity providers (%d):\n", len(c.IdPs))
	w = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, idp := range c.IdPs {
		domains := "no domains"
		if len(idp.Domains) > 0 {
			domains = "domains " + strings.Join(idp.Domains, ", ")
		}
		scim := "no SCIM push"
		if idp.SCIM != nil {
			scim = "SCIM push, subject " + idp.SCIM.Subject
			if idp.SCIM.Automatic {
				scim += ", automatic"
			}
		}
		fmt.Fprintf(w, "  %s\t%s\t%q\t%s\t%s\n", idp.ID, idp.Type, idp.Name, domains, scim)
	}
	w.Flush()

	if len(c.Directories) > 0 {
		fmt.Fprintf(&b, "\ndirectories (%d):\n", len(c.Directories))
		w = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		for _, d := range c.Directories {
			when := "by hand only"
			switch {
			case d.Schedule != "":
				when = "cron " + d.Schedule
			case d.Every > 0:
				when = "every " + ShortDuration(d.Every)
			}
			if d.Schedule != "" || d.Every > 0 {
				when += ", full every " + ShortDuration(d.FullEvery)
			}
			mode := "updates known people"
			if d.Automatic {
				mode = "automatic: creates people before their first login"
			}
			fmt.Fprintf(w, "  %s\t%s\tidp %s\t%s\t%s\n", d.Name, d.Type, d.IdP, when, mode)
		}
		w.Flush()
	}

	fmt.Fprintf(&b, "\nroutes, most specific first:\n")
	w = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, a := range routeOrder(c.Apps) {
		if a.Upstream == "" {
			continue // not proxied: provider only, or provisioning only (Cloud)
		}
		host, prefix := a.Route.Host, a.Route.PathPrefix
		if host == "" {
			host = "*"
		}
		if prefix == "" {
			prefix = "/"
		}
		fmt.Fprintf(w, "  %s%s\t-> %s\n", host, prefix, a.Name)
	}
	w.Flush()
	return b.String()
}

// routeOrder sorts apps the way the proxy matches them: host and longest
// prefix, then host alone, then prefix alone (longest first).
func routeOrder(apps []App) []App {
	out := append([]App(nil), apps...)
	rank := func(r Route) int {
		switch {
		case r.Host != "" && r.PathPrefix != "":
			return 0
		case r.Host != "":
			return 1
		}
		return 2
	}
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := out[i].Route, out[j].Route
		if rank(ri) != rank(rj) {
			return rank(ri) < rank(rj)
		}
		return len(ri.PathPrefix) > len(rj.PathPrefix)
	})
	return out
}

// Redacted is the effective configuration (defaults applied) as YAML, with
// every secret replaced by where it comes from ({env: NAME}, {file: path})
// or "[redacted]", and secret-looking values in IdP blocks redacted.
func (c *Config) Redacted() ([]byte, error) {
	return yaml.MarshalWithOptions(dumpValue(reflect.ValueOf(*c)), yaml.Indent(2), yaml.IndentSequence(true))
}

// dumpValue turns a configuration value into plain YAML values, in schema
// order, with durations written as "8h0m0s" rather than nanoseconds.
func dumpValue(v reflect.Value) any {
	switch v.Type() {
	case secretType:
		return v.Interface().(Secret).redactedForm()
	case rawType:
		return v.Interface().(Raw).redactedForm(true)
	case durationType:
		return ShortDuration(time.Duration(v.Int()))
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return dumpValue(v.Elem())
	case reflect.Struct:
		var out yaml.MapSlice
		for _, f := range fieldsOf(v.Type()) {
			out = append(out, yaml.MapItem{Key: f.name, Value: dumpValue(v.FieldByIndex(f.index))})
		}
		return out
	case reflect.Slice:
		if v.IsNil() {
			return nil
		}
		out := make([]any, v.Len())
		for i := range out {
			out[i] = dumpValue(v.Index(i))
		}
		return out
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		var out yaml.MapSlice
		for _, k := range keys {
			out = append(out, yaml.MapItem{Key: k.String(), Value: dumpValue(v.MapIndex(k))})
		}
		return out
	}
	return v.Interface()
}

// ShortDuration writes 8h rather than 8h0m0s, in the form admins type
// (and this package reads) durations.
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
