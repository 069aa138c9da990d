package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// ErrTruncated means a directory pull ended with fewer users than the
// service provider said it holds: a page came back empty or short before
// the total, or the total moved while paging. Such a listing cannot prove
// that anybody is missing from it.
var ErrTruncated = errors.New("directory listing truncated")

// DirectoryUser is the part of a pulled SCIM user a sweep needs.
type DirectoryUser struct {
	ID         string
	ExternalID string
	UserName   string
	// Active is false only when the resource says "active": false; an
	// absent attribute counts as active, the direction that removes nobody.
	Active bool
}

// SCIMClient pulls /Users from a SCIM 2.0 service provider (RFC 7644
// §3.4.2.4 index paging). It is safe for concurrent use.
type SCIMClient struct {
	// BaseURL is the SCIM base, e.g. https://example.okta.com/scim/v2.
	BaseURL  string
	Token    string // bearer token
	PageSize int    // count per page (default 200)
	HTTP     *http.Client
}

// maxPageBytes bounds one page's body, so a broken server cannot exhaust
// memory.
const maxPageBytes = 64 << 20

type listResponse struct {
	TotalResults *int              `json:"totalResults"`
	ItemsPerPage int               `json:"itemsPerPage"`
	StartIndex   int               `json:"startIndex"`
	Resources    []json.RawMessage `json:"Resources"`
}

type scimUser struct {
	ID         string `json:"id"`
	ExternalID string `json:"externalId"`
	UserName   string `json:"userName"`
	Active     *bool  `json:"active"`
}

// Users pulls every user. It fails (ErrTruncated) rather than return a
// listing it cannot show to be complete.
func (c *SCIMClient) Users(ctx context.Context) ([]DirectoryUser, error) {
	size := c.PageSize
	if size <= 0 {
		size = defaultPageSize
	}
	var (
		out   []DirectoryUser
		total = -1
		start = 1
	)
	for {
		page, err := c.page(ctx, start, size)
		if err != nil {
			return nil, err
		}
		if page.TotalResults == nil {
			return nil, fmt.Errorf("scim %s: page at startIndex %d: no totalResults", c.BaseURL, start)
		}
		switch {
		case total < 0:
			total = *page.TotalResults
		case *page.TotalResults != total:
			return nil, fmt.Errorf("scim %s: totalResults moved from %d to %d while paging: %w",
				c.BaseURL, total, *page.TotalResults, ErrTruncated)
		}
		for i, raw := range page.Resources {
			var u scimUser
			if err := json.Unmarshal(raw, &u); err != nil {
				return nil, fmt.Errorf("scim %s: user %d at startIndex %d: %w", c.BaseURL, i, start, err)
			}
			out = append(out, DirectoryUser{ID: u.ID, ExternalID: u.ExternalID, UserName: u.UserName,
				Active: u.Active == nil || *u.Active})
		}
		n := len(page.Resources)
		switch {
		case len(out) == total:
			return out, nil
		case len(out) > total:
			return nil, fmt.Errorf("scim %s: received %d users of totalResults %d: %w", c.BaseURL, len(out), total, ErrTruncated)
		case n == 0:
			return nil, fmt.Errorf("scim %s: empty page at startIndex %d after %d of %d users: %w",
				c.BaseURL, start, len(out), total, ErrTruncated)
		case page.ItemsPerPage > 0 && n < page.ItemsPerPage:
			// A server may cap count below what we asked, but one that
			// says it put more on the page than it did has lost some.
			return nil, fmt.Errorf("scim %s: page at startIndex %d holds %d of its itemsPerPage %d (%d of %d users): %w",
				c.BaseURL, start, n, page.ItemsPerPage, len(out), total, ErrTruncated)
		}
		start += n
	}
}

func (c *SCIMClient) page(ctx context.Context, start, count int) (*listResponse, error) {
	u, err := url.Parse(strings.TrimRight(c.BaseURL, "/") + "/Users")
	if err != nil {
		return nil, fmt.Errorf("scim %s: %w", c.BaseURL, err)
	}
	u.RawQuery = url.Values{"startIndex": {strconv.Itoa(start)}, "count": {strconv.Itoa(count)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("scim %s: %w", c.BaseURL, err)
	}
	req.Header.Set("Accept", "application/scim+json, application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scim %s: list users at startIndex %d: %w", c.BaseURL, start, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPageBytes+1))
	if err != nil {
		return nil, fmt.Errorf("scim %s: list users at startIndex %d: read: %w", c.BaseURL, start, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scim %s: list users at startIndex %d: HTTP %d: %.200s", c.BaseURL, start, resp.StatusCode, body)
	}
	if len(body) > maxPageBytes {
		return nil, fmt.Errorf("scim %s: list users at startIndex %d: page larger than %d bytes", c.BaseURL, start, maxPageBytes)
	}
	var lr listResponse
	if err := json.Unmarshal(body, &lr); err != nil {
		return nil, fmt.Errorf("scim %s: list users at startIndex %d: %w", c.BaseURL, start, err)
	}
	return &lr, nil
}

func validateURL(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return []string{"want an absolute http(s) URL"}
	}
	return nil
}
