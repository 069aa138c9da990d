package saml

import (
	"context"
	"fmt"
	"testing"

	"github.com/usherhq/usher/providers/saml/samltest"
)

// BenchmarkACS is Finish on a response whose assertion is signed with
// RSA-2048 (SHA-256): parse, verify, check, replay-record.
func BenchmarkACS(b *testing.B) {
	e := newEnv(b, nil)
	ch, reqID := e.begin("flow-1")
	docs := make([][]byte, b.N)
	for i := range docs {
		r := e.forged(reqID)
		r.AssertionID = fmt.Sprintf("id-bench-%d", i)
		r.Attributes = map[string][]string{"groups": {"jira-users", "confluence-users"}, "mail": {"alice@example.com"}}
		doc, err := e.idp.Forge(r)
		if err != nil {
			b.Fatal(err)
		}
		docs[i] = docBytes(b, doc)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range docs {
		req := samltest.ACSRequest(e.p.ACSURL(), docs[i], "flow-1")
		if _, err := e.p.Finish(context.Background(), req, ch.State); err != nil {
			b.Fatal(err)
		}
	}
}
