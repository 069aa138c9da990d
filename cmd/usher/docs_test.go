package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// docsPrelude completes an `idps:` example from docs/idps into a whole
// file: the pages use https://jira.example.com as the public URL.
const docsPrelude = `server:
  public_url: https://jira.example.com
session:
  keys: ["0123456789abcdef0123456789abcdef"]
apps:
  - name: jira
    kind: jira
    upstream: http://jira.internal:8080
    route: {host: jira.example.com}
`

// yamlBlocks returns the ```yaml fenced blocks of a Markdown page with the
// line each starts on.
func yamlBlocks(page string) (blocks []string, lines []int) {
	var cur *strings.Builder
	start := 0
	for i, line := range strings.Split(page, "\n") {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```yaml":
			cur, start = &strings.Builder{}, i+2
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks, lines = append(blocks, cur.String()), append(lines, start)
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return blocks, lines
}

// TestDocsIdPExamplesPassCheck runs `usher check` on every YAML example
// of the IdP setup pages, so a page never shows a config usher refuses.
func TestDocsIdPExamplesPassCheck(t *testing.T) {
	pages, err := filepath.Glob("../../docs/idps/*.md")
	if err != nil || len(pages) == 0 {
		t.Fatalf("no pages under docs/idps: %v", err)
	}
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		blocks, lines := yamlBlocks(string(b))
		if len(blocks) == 0 && filepath.Base(page) != "README.md" {
			t.Errorf("%s has no yaml example", page)
		}
		for i, block := range blocks {
			name := filepath.Base(page) + ":" + strconv.Itoa(lines[i])
			t.Run(name, func(t *testing.T) {
				if !strings.HasPrefix(block, "idps:") {
					t.Fatalf("example does not start with idps:\n%s", block)
				}
				// The examples name secrets of the reader's environment.
				code, stdout, stderr := runCLI(t, "check", "--no-secrets", "--config", writeConfig(t, docsPrelude+block))
				if code != 0 {
					t.Fatalf("usher check refuses the example (exit %d):\n%s%s\n%s", code, stdout, stderr, block)
				}
			})
		}
	}
}

// directoryIdPs are the IdPs the directory page's examples name.
const directoryIdPs = `idps:
  - {id: entra, type: oidc, config: {issuer: https://login.microsoftonline.com/t/v2.0, client_id: x, client_secret: {value: s}}}
  - {id: okta, type: oidc, config: {issuer: https://example.okta.com, client_id: x, client_secret: {value: s}}}
  - {id: google, type: oidc, config: {issuer: https://accounts.google.com, client_id: x, client_secret: {value: s}}}
  - {id: onelogin, type: oidc, config: {issuer: https://example.onelogin.com/oidc/2, client_id: x, client_secret: {value: s}}}
  - {id: corp, type: oidc, config: {issuer: https://adfs.example.com/adfs, client_id: x, client_secret: {value: s}}}
`

// TestDocsDirectoryExamplesPassCheck runs `usher check` on every YAML
// example of docs/directories.md (a sweep example beside a directory it
// can name), so the page never shows a block usher refuses.
func TestDocsDirectoryExamplesPassCheck(t *testing.T) {
	b, err := os.ReadFile("../../docs/directories.md")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GRAPH_SECRET", "s")
	t.Setenv("ONELOGIN_API_SECRET", "s")
	blocks, lines := yamlBlocks(string(b))
	if len(blocks) < 4 {
		t.Fatalf("only %d yaml examples", len(blocks))
	}
	for i, block := range blocks {
		t.Run("directories.md:"+strconv.Itoa(lines[i]), func(t *testing.T) {
			text := docsPrelude + directoryIdPs + block
			switch {
			case strings.HasPrefix(block, "directories:"):
			case strings.HasPrefix(block, "sweeps:"):
				text += "directories:\n  - {name: entra, type: scim, idp: entra, config: {url: https://x.example/scim/v2, token: {value: t}}}\n"
			default:
				t.Fatalf("example starts with neither directories: nor sweeps:\n%s", block)
			}
			// The examples name secrets of the reader's environment.
			code, stdout, stderr := runCLI(t, "check", "--no-secrets", "--config", writeConfig(t, text))
			if code != 0 {
				t.Fatalf("usher check refuses the example (exit %d):\n%s%s\n%s", code, stdout, stderr, block)
			}
		})
	}
}
