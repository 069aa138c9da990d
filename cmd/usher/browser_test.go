package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser test drives the real pages in headless Chromium: the
// chooser, the IdP's form and the admin pages are only proven usable when
// a browser, with its own redirect, cookie and form rules, gets through
// them.

// newBrowser starts headless Chromium and returns a tab's context, which
// ends with the test or after the whole test's 60 s budget.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := ""
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			exe = p
			break
		}
	}
	if exe == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; .ci/run installs it (apt-get install chromium)")
		}
		t.Skip("chromium is not installed: apt-get install -y chromium")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root, where the sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// Cleanups run last-registered first: the browser exits before its
	// user-data-dir (registered above) is removed.
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	ctx, cancelTimeout := context.WithTimeout(bctx, 60*time.Second)
	t.Cleanup(cancelTimeout)
	// The first run starts the browser, which lives as long as that
	// context: bctx, so that a screenshot can still be taken once the
	// test's deadline has passed.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	return ctx
}

// shotDir is where screenshots go: $USHER_SCREENSHOTS, else a new
// temporary directory. Not t.TempDir: that is removed when the test
// ends, which is exactly when someone wants to look at a failure.
func shotDir(t *testing.T) string {
	if d := os.Getenv("USHER_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err == nil {
			return d
		}
	}
	d, err := os.MkdirTemp("", "usher-browser-")
	if err != nil {
		t.Logf("screenshot directory: %v", err)
		return os.TempDir()
	}
	return d
}

var unsafeName = regexp.MustCompile(`[^a-z0-9]+`)

// saveShot writes a full-page screenshot and the page's HTML named after
// the step. It gets its own short deadline, because a step that failed
// may have used up the test's.
func saveShot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var png []byte
	var html, loc string
	if err := chromedp.Do(ctx, into(chromedp.Location(), &loc), into(chromedp.FullScreenshot(100), &png),
		into(chromedp.OuterHTML(chromedp.CSS("html")), &html)); err != nil {
		t.Logf("screenshot of %q: %v", name, err)
		return
	}
	base := filepath.Join(dir, unsafeName.ReplaceAllString(strings.ToLower(name), "-"))
	if err := os.WriteFile(base+".png", png, 0o644); err != nil {
		t.Logf("screenshot of %q: %v", name, err)
	}
	if err := os.WriteFile(base+".html", []byte(html), 0o644); err != nil {
		t.Logf("HTML of %q: %v", name, err)
	}
	t.Logf("step %q at %s: screenshot %s.png", name, loc, base)
}

// into runs a that returns a value as a step that keeps it in *v.
func into[T any](a chromedp.Action[T], v *T) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		var err error
		*v, err = a(ctx, tg)
		return chromedp.Void{}, err
	}
}

// step runs actions in the browser, each step with at most 20 s of the
// test's budget. On failure it keeps a screenshot and the HTML and stops
// the test, naming the action that failed (a timed-out wait otherwise
// says only "context deadline exceeded"); with USHER_SCREENSHOTS set it
// keeps them for every step.
func step(t *testing.T, ctx context.Context, name string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for i, a := range actions {
		if err := chromedp.Do(sctx, a); err != nil {
			saveShot(t, ctx, shotDir(t), name)
			t.Fatalf("browser step %q, action %d: %v", name, i+1, err)
		}
	}
	if d := os.Getenv("USHER_SCREENSHOTS"); d != "" {
		saveShot(t, ctx, shotDir(t), name)
	}
}

func TestBrowserLoginAdminTimelineSweepSync(t *testing.T) {
	t.Parallel()
	e := startEnvWith(t, envOptions{Apps: true, Mapping: jitMapping, Extra: sweepConfig})
	ctx := newBrowser(t)

	// Home-realm discovery from the chooser, then the IdP's own form.
	step(t, ctx, "chooser",
		chromedp.Navigate(e.url+"/jira/"),
		chromedp.WaitVisible(chromedp.CSS(`#email`)),
		chromedp.SendKeys(chromedp.CSS(`#email`), "alice@acme.test"),
		chromedp.Click(`//button[.="Continue"]`),
	)
	var heading string
	step(t, ctx, "idp login",
		chromedp.WaitVisible(chromedp.CSS(`input[name=password]`)),
		chromedp.SetValue(chromedp.CSS(`input[name=username]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "pw-alice"),
		chromedp.Click(`//button[.="Sign in"]`),
		chromedp.WaitVisible(`//h1[contains(., "you are")]`),
		into(chromedp.Text(chromedp.CSS(`h1`)), &heading),
	)
	if !strings.Contains(heading, "you are alice") {
		t.Fatalf("Jira's page says %q, want alice signed in", heading)
	}

	// The admin listener: token sign-in, search, timeline.
	admin := "http://" + e.m.AdminAddr()
	step(t, ctx, "admin login",
		chromedp.Navigate(admin+"/admin/"),
		chromedp.WaitVisible(chromedp.CSS(`#token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), "admin-token"),
		chromedp.Click(`//button[.="Sign in"]`),
		chromedp.WaitVisible(chromedp.CSS(`form.filters input[name=q]`)),
	)
	step(t, ctx, "search",
		chromedp.SendKeys(chromedp.CSS(`form.filters input[name=q]`), "alice"),
		chromedp.Click(`//form[@class="filters"]//button[.="Search"]`),
		chromedp.WaitVisible(`//th[.="Matched"]`),
		chromedp.Click(`//td/a[.="00u-alice"]`),
	)
	// The login's claims and profile, then what it wrote to Jira.
	var timeline string
	step(t, ctx, "timeline",
		chromedp.WaitVisible(`//h2[.="Timeline"]`),
		chromedp.WaitVisible(`//tr[td[2][.="app.create"] and td[3][.="jira"] and contains(td[6], "created alice")]`),
		chromedp.WaitVisible(`//tr[td[2][.="app.group.add"] and td[3][.="jira"] and contains(td[6], "added to jira-developers")]`),
		into(chromedp.Text(`//tr[td[2][.="login"]]`), &timeline),
	)
	for _, want := range []string{"Claims received", "alice@acme.test", "Profile produced", "jira-developers"} {
		if !strings.Contains(timeline, want) {
			t.Errorf("timeline lacks %q:\n%s", want, timeline)
		}
	}

	var result string
	step(t, ctx, "sync now",
		chromedp.Click(`//button[.="Sync now"]`),
		chromedp.WaitVisible(`//h2[.="Sync result"]`),
		into(chromedp.Text(`//h2[.="Sync result"]/following-sibling::*[1]`), &result),
	)
	// Nothing changed since the login: every app says so, none failed.
	for _, app := range []string{"bitbucket", "confluence", "crowd", "jira"} {
		if !strings.Contains(result, app+": already in sync") {
			t.Errorf("sync result %q lacks %q", result, app+": already in sync")
		}
	}

	// alice's access ended an hour ago: the plan and a dry run list her,
	// and no app changes.
	if err := e.m.store.SetAccessExpiry(context.Background(), "acme", "00u-alice", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	aliceDeactivated := `//tr[td[2]/a[.="alice"] and td[3][.="jira"] and td[4][.="deactivate"]]`
	step(t, ctx, "sweep plan",
		chromedp.Click(`//nav/a[.="Sweeps"]`),
		chromedp.Click(`//tr[td[1][.="expired"]]//a[.="Plan (dry run)"]`),
		chromedp.WaitVisible(`//p[contains(., "This is a preview")]`),
		chromedp.WaitVisible(aliceDeactivated),
	)
	var row string
	step(t, ctx, "sweep dry run",
		chromedp.Click(`//button[.="Dry run now"]`),
		chromedp.WaitVisible(`//p[contains(., "Dry run recorded")]`),
		into(chromedp.Text(aliceDeactivated), &row),
	)
	if !strings.Contains(row, "access expired") {
		t.Errorf("dry-run row %q does not give the expiry as the reason", row)
	}
	if u, ok := e.apps["jira"].User("alice"); !ok || !u.Active {
		t.Fatalf("after a dry run, jira's alice = %+v, %v; want active", u, ok)
	}
}
