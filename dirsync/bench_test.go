package dirsync

import (
	"fmt"
	"testing"

	"github.com/usherhq/usher/directory"
)

// BenchmarkUnchangedFullSync is the steady state of a scheduled full
// pull: every person already applied, nothing changed. It costs store
// reads only (a binding, an owner check and one app state per person),
// no app call and no write. Reported per run of 2,000 people.
func BenchmarkUnchangedFullSync(b *testing.B) {
	e := newEnv(b)
	for i := range 2000 {
		e.dir.put(fmt.Sprintf("p%04d", i), directory.Active, "staff", "engineering")
	}
	e.dir.pageSize = 500
	s := e.syncer(b, Config{Automatic: true, Scope: "v1", Concurrency: 8})
	res, err := s.Run(b.Context(), true, false)
	if err != nil || res.Created != 2000 {
		b.Fatalf("initial sync: %v, created %d", err, res.Created)
	}
	b.ResetTimer()
	for b.Loop() {
		res, err := s.Run(b.Context(), true, false)
		if err != nil || res.Unchanged != 2000 {
			b.Fatalf("%v, unchanged %d", err, res.Unchanged)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/2000, "µs/person")
}
