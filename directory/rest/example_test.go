package rest_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/usherhq/usher/directory"
	"github.com/usherhq/usher/directory/rest"
)

// A connector builds one Client per origin: one for the token endpoint,
// one for the API, whose Auth is a TokenCache over ClientCredentials.
// Every call of one pull shares a Budget, so throttling waits are capped
// for the whole run, and paging links are followed verbatim (the client
// refuses any that leave the origin).
func Example() {
	deps := directory.Deps{} // from usher's wiring: Client, Log, Clock, Observe
	login, _ := url.Parse("https://oauth2.example.com")
	api, _ := url.Parse("https://api.example.com")

	tokens, _ := rest.New(rest.Config{Service: "example token", Origin: login,
		HTTP: deps.Client, Clock: deps.Clock, Log: deps.Log, Observe: deps.Observe})
	cc := &rest.ClientCredentials{Client: tokens, TokenURL: "https://oauth2.example.com/token",
		ClientID: "id", Secret: "secret", BasicAuth: true} // OneLogin style
	client, _ := rest.New(rest.Config{
		Service: "example", Origin: api, HTTP: deps.Client, Clock: deps.Clock, Log: deps.Log, Observe: deps.Observe,
		Auth: rest.NewTokenCache(cc.Fetch, deps.Clock),
		// A service with its own pacing headers supplies Retry and Pace;
		// DefaultRetry (429/502/503/504 with Retry-After) fits most.
		Retry: rest.DefaultRetry,
	})

	budget := rest.NewBudget(10 * time.Minute)
	next := "https://api.example.com/users?limit=100"
	for next != "" {
		var page struct {
			Users []struct{ ID string } `json:"users"`
			Next  string                `json:"next"`
		}
		if _, err := client.GetJSON(context.Background(), "users", next, http.Header{}, budget, &page); err != nil {
			// A pull wraps directory.ErrIncomplete around this.
			fmt.Println(fmt.Errorf("example: pull: %w: %w", directory.ErrIncomplete, err))
			return
		}
		next = page.Next
	}
}
