package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/usherhq/usher/config"
	"github.com/usherhq/usher/store/postgres"
	"github.com/usherhq/usher/store/sqlite"
	"github.com/usherhq/usher/tlsserve"
)

const usage = `usher: a login-time sync proxy for Atlassian apps

usage:
  usher serve --config FILE    run usher
  usher check --config FILE [--no-secrets]
                               check a config file (and that its secrets can be read) and summarise it
  usher sweep --config FILE [--dry-run] [--json] [--policy NAME]
                               run deprovisioning sweeps now (--dry-run: print the plans only;
                               --json: one document, {"runs": [...]})
  usher sync --config FILE [--directory NAME] [--dry-run] [--json] [--subject S]
                               sync everyone (or one person) from the IdPs' directories now
                               (--dry-run: report what would change, change nothing)
  usher reload --config FILE   make a running usher re-read its config (or send it SIGHUP)
  usher migrate --config FILE  apply database schema migrations and exit
  usher demo [--port N]        run a self-contained demo (demo IdPs, a demo app, SQLite)
  usher saml keygen --cn NAME  print a new SAML SP key and certificate (PEM)
  usher version                print the version
`

// run is the whole command line; it returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "saml":
		err = cmdSAML(args[1:], stdout)
	case "sweep":
		err = cmdSweep(ctx, args[1:], stdout, stderr)
	case "sync":
		err = cmdSync(ctx, args[1:], stdout, stderr)
	case "reload":
		err = cmdReload(ctx, args[1:], stdout, stderr)
	case "migrate":
		err = cmdMigrate(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "usher", version())
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "usher: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue) && errors.Is(ue.err, flag.ErrHelp):
		ue.printFlags(stdout)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "usher %s: %v\n", args[0], ue.err)
		ue.printFlags(stderr)
		return 2
	default:
		fmt.Fprintf(stderr, "usher %s: %v\n", args[0], err)
		return 1
	}
}

// usageError is a command line usher cannot run as given: exit code 2,
// with the command's flags when it has them.
type usageError struct {
	err error
	fs  *flag.FlagSet // nil: the command has no flags to list
}

func (e usageError) Error() string { return e.err.Error() }

// printFlags lists the command's flags after its complaint.
func (e usageError) printFlags(w io.Writer) {
	if e.fs == nil {
		return
	}
	fmt.Fprintf(w, "\nflags of usher %s:\n", e.fs.Name())
	e.fs.SetOutput(w)
	e.fs.PrintDefaults()
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// Parse's complaints come back as errors, which run prints once,
	// with the flags.
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{err, fs}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0)), fs}
	}
	return nil
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("serve")
	path := fs.String("config", "usher.yaml", "config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	m := &Main{Config: cfg, ConfigPath: *path, Log: newLogger(stderr, cfg.Log)}
	if err := m.Open(ctx); err != nil {
		return err
	}
	defer m.Close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			_ = m.Reload(ctx) // logs why when refused
		}
	}()
	m.Log.Info("usher serving", "listen", m.Addr(), "admin", m.AdminAddr(), "public_url", cfg.Server.PublicURL, "version", version())
	return m.Wait(ctx)
}

// cmdReload asks a running usher to re-read its config, through the
// admin API named in the same config file (or send it SIGHUP).
func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload")
	path := fs.String("config", "usher.yaml", "config file of the running usher")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if cfg.Admin.Listen == "off" || cfg.Admin.Token.IsZero() {
		return errors.New("reload needs admin.listen and admin.token in the config; or send the process SIGHUP")
	}
	tok, err := cfg.Admin.Token.Resolve()
	if err != nil {
		return fmt.Errorf("admin.token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+cfg.Admin.Listen+"/admin/api/reload", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach usher's admin listener at %s: %w", cfg.Admin.Listen, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		// The admin API answers {"error": "reload failed: running config kept: ..."}.
		var apiErr struct{ Error string }
		if json.Unmarshal(body, &apiErr) != nil || apiErr.Error == "" {
			apiErr.Error = "reload failed: " + strings.TrimSpace(string(body))
		}
		return fmt.Errorf("%s (HTTP %d)", apiErr.Error, resp.StatusCode)
	}
	fmt.Fprintln(stdout, "usher reloaded its config")
	return nil
}

// cmdCheck reports every problem in a config file at once, with its YAML
// path and line, including those inside each IdP's own config block and
// secrets that cannot be read (unless --no-secrets).
func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check")
	path := fs.String("config", "usher.yaml", "config file")
	noSecrets := fs.Bool("no-secrets", false, "do not read {env: ...} and {file: ...} secrets (checking a file away from where it runs)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := readConfig(*path, !*noSecrets)
	if err != nil {
		return err
	}
	note := ""
	if *noSecrets {
		note = " (secrets not read: --no-secrets)"
	}
	fmt.Fprintf(stdout, "%s: ok%s\n\n%s%s", *path, note, cfg.Summary(), sweepSummary(cfg))
	if ws := configWarnings(cfg); len(ws) > 0 {
		fmt.Fprintf(stdout, "\nwarnings:\n")
		for _, w := range ws {
			fmt.Fprintf(stdout, "  - %s\n", w)
		}
	}
	return nil
}

// cmdMigrate applies the store's schema migrations. With store.migrate:
// manual, upgrades run it once before starting the new version.
func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate")
	path := fs.String("config", "usher.yaml", "config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	switch cfg.Store.Driver {
	case "postgres":
		dsn, err := cfg.Store.DSN.Resolve()
		if err != nil {
			return fmt.Errorf("store.dsn: %w", err)
		}
		err = postgres.Migrate(ctx, dsn)
		if err != nil {
			return err
		}
	default:
		if err := prepareDataDir(cfg); err != nil {
			return err
		}
		if err := sqlite.Migrate(ctx, cfg.Store.Path); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s store is up to date\n", cfg.Store.Driver)
	return nil
}

// loadConfig loads, validates and checks the provider blocks and that
// every secret can be read, so that serve and check refuse exactly the
// same files, each problem with its YAML path and line.
func loadConfig(path string) (*config.Config, error) { return readConfig(path, true) }

// readConfig is loadConfig; without secrets it reads no secret (usher
// check --no-secrets).
func readConfig(path string, secrets bool) (*config.Config, error) {
	cfg, err := config.Load(path)
	var errs config.Errors
	if err != nil && !errors.As(err, &errs) {
		return nil, err
	}
	if cfg != nil {
		// The claims a mapping reads by default are the IdP type's.
		for i, idp := range cfg.IdPs {
			if newConfig, ok := providerTypes[idp.Type]; ok {
				cfg.IdPs[i].Mapping = idp.Mapping.WithDefaults(newConfig().ClaimDefaults())
			}
		}
		add := func(err error, at func(string) config.Error) {
			var pe config.Errors
			switch {
			case err == nil:
			case errors.As(err, &pe):
				errs = append(errs, pe...)
			default:
				errs = append(errs, at(err.Error()))
			}
		}
		for i, idp := range cfg.IdPs {
			_, err := providerConfig(cfg, i)
			add(err, func(msg string) config.Error { return idp.Config.ErrorAt("", msg) })
			_, err = mapperFor(cfg, i)
			add(err, func(msg string) config.Error { return cfg.ErrorAt(fmt.Sprintf("idps[%d]", i), msg) })
		}
		for i, app := range cfg.Apps {
			_, err := targetConfig(cfg, i)
			add(err, func(msg string) config.Error { return app.API.ErrorAt("", msg) })
		}
		if !cfg.Server.TLS.IsZero() {
			var tc tlsserve.Config
			err := cfg.Server.TLS.Decode(&tc)
			if err == nil {
				if errs := cfg.Server.TLS.Errors(tc.Validate()); len(errs) > 0 {
					err = errs
				}
			}
			add(err, func(msg string) config.Error { return cfg.Server.TLS.ErrorAt("", msg) })
		}
		for i := range cfg.Directories {
			_, err := directoryConfig(cfg, i)
			add(err, func(msg string) config.Error { return cfg.Directories[i].Config.ErrorAt("", msg) })
		}
		for i, raw := range cfg.Sweeps {
			_, err := sweepPolicy(cfg, i)
			add(err, func(msg string) config.Error { return raw.ErrorAt("", msg) })
		}
		errs = append(errs, scimSubjects(cfg)...)
		errs = append(errs, routeHosts(cfg)...)
		if secrets {
			// After every block above is decoded: their secrets count too.
			errs = append(errs, cfg.CheckSecrets()...)
		}
		errs = dedupe(errs)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// routeHosts refuses app hosts a session cannot reach: the login lands
// on the public URL's host, and the session cookie set there reaches
// another host only through a shared session.cookie_domain.
func routeHosts(cfg *config.Config) config.Errors {
	u, err := url.Parse(cfg.Server.PublicURL)
	if err != nil {
		return nil
	}
	public := strings.ToLower(u.Hostname())
	domain := strings.ToLower(cfg.Session.CookieDomain)
	under := func(h string) bool { return domain != "" && (h == domain || strings.HasSuffix(h, "."+domain)) }
	var errs config.Errors
	if domain != "" && !under(public) {
		errs = append(errs, cfg.ErrorAt("session.cookie_domain", fmt.Sprintf(
			"the public URL's host %s is not under %s, so browsers would drop the session cookie", public, domain)))
	}
	for i, a := range cfg.Apps {
		h := strings.ToLower(a.Route.Host)
		if hn, _, err := net.SplitHostPort(h); err == nil {
			h = hn
		}
		if h == "" || h == public || (under(h) && under(public)) {
			continue
		}
		errs = append(errs, cfg.ErrorAt(fmt.Sprintf("apps[%d].route.host", i), fmt.Sprintf(
			"host %s differs from the public URL's host %s: set session.cookie_domain to a domain both are under, or route this app on %s", h, public, public)))
	}
	return errs
}

// dedupe drops repeats: a problem in the shared provisioning block is
// reported once, not once per IdP.
func dedupe(errs config.Errors) config.Errors {
	seen := map[string]bool{}
	out := errs[:0]
	for _, e := range errs {
		if k := e.Error(); !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}
