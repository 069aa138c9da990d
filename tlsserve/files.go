package tlsserve

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certFiles serves a certificate pair from files and re-reads it when the
// files change. The check rides on handshakes: at most once per interval
// one handshake stats both files (two cheap syscalls) and, if either
// changed, reloads the pair. No goroutine, no timer, and a test can move
// the clock instead of sleeping.
type certFiles struct {
	certFile, keyFile string
	log               *slog.Logger

	cur       atomic.Pointer[tls.Certificate]
	lastCheck atomic.Int64 // unix nanoseconds of the last stat; 0 = never

	mu     sync.Mutex // held while reloading; guards the fields below
	loaded fileStamp  // files behind cur
	// failed and failedMsg describe the last failed reload, so each
	// broken state is logged once, not on every check.
	failed    fileStamp
	failedMsg string
}

// fileStamp identifies the contents of the pair without reading it.
type fileStamp struct {
	cert, key os.FileInfo
}

func (a fileStamp) same(b fileStamp) bool {
	return sameFile(a.cert, b.cert) && sameFile(a.key, b.key)
}

// sameFile treats a file as unchanged while it is the same inode with the
// same size and modification time; a replacement by rename gets a new
// inode even within one mtime tick.
func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == b
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

func loadCertFiles(certFile, keyFile string, log *slog.Logger) (*certFiles, error) {
	f := &certFiles{certFile: certFile, keyFile: keyFile, log: log}
	st, err := f.stat()
	if err != nil {
		return nil, err
	}
	c, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cur.Store(c)
	f.loaded = st
	return f, nil
}

func (f *certFiles) stat() (fileStamp, error) {
	c, err := os.Stat(f.certFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("tls: certificate file: %w", err)
	}
	k, err := os.Stat(f.keyFile)
	if err != nil {
		return fileStamp{}, fmt.Errorf("tls: key file: %w", err)
	}
	return fileStamp{cert: c, key: k}, nil
}

func (f *certFiles) load() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", f.certFile, f.keyFile, err)
	}
	return &c, nil
}

// get returns the certificate to present, first reloading the files if
// the last check is at least interval old and they changed.
func (f *certFiles) get(now time.Time, interval time.Duration) *tls.Certificate {
	if interval <= 0 {
		interval = time.Second
	}
	last, n := f.lastCheck.Load(), now.UnixNano()
	// Exactly one handshake wins the swap and checks; the others present
	// the current pair without waiting.
	if (last == 0 || n-last >= int64(interval)) && f.lastCheck.CompareAndSwap(last, n) {
		f.reload(now)
	}
	return f.cur.Load()
}

func (f *certFiles) reload(now time.Time) {
	if !f.mu.TryLock() {
		return // a slow reload is still running
	}
	defer f.mu.Unlock()
	st, err := f.stat()
	if err == nil && st.same(f.loaded) {
		return
	}
	if err == nil {
		var c *tls.Certificate
		if c, err = f.load(); err == nil {
			f.cur.Store(c)
			f.loaded, f.failed, f.failedMsg = st, fileStamp{}, ""
			args := []any{"cert_file", f.certFile}
			if c.Leaf != nil {
				args = append(args, "subject", c.Leaf.Subject.String(),
					"not_after", c.Leaf.NotAfter, "expired", now.After(c.Leaf.NotAfter))
			}
			f.log.Info("tls: reloaded certificate files", args...)
			return
		}
	}
	// Half-written pairs (new certificate, old key) land here too; the
	// next change of either file retries. Log each broken state once.
	if !st.same(f.failed) || err.Error() != f.failedMsg {
		f.failed, f.failedMsg = st, err.Error()
		f.log.Error("tls: certificate files changed but cannot be used; keeping the previous certificate",
			"cert_file", f.certFile, "key_file", f.keyFile, "err", err)
	}
}
