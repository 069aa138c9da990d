package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/usherhq/usher/providers/saml"
)

// cmdSAML holds SAML helpers. `usher saml keygen` makes the SP key pair of
// a new installation; usher never generates one silently at start, since a
// key that changes on restart breaks every IdP that trusts it.
func cmdSAML(args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "keygen" {
		return usageError{err: fmt.Errorf("usage: usher saml keygen [--cn NAME] [--days N] [--key FILE --cert FILE]")}
	}
	fs := newFlags("saml keygen")
	cn := fs.String("cn", "usher", "certificate common name (your public host name)")
	days := fs.Int("days", 3650, "validity in days")
	keyFile := fs.String("key", "", "write the private key to this file (mode 0600) instead of stdout")
	certFile := fs.String("cert", "", "write the certificate to this file instead of stdout")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *days <= 0 {
		return usageError{fmt.Errorf("--days must be positive"), fs}
	}
	key, cert, err := saml.GenerateKeyPair(*cn, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	if *keyFile != "" {
		if err := writeNew(*keyFile, key, 0o600); err != nil {
			return err
		}
	} else {
		_, _ = stdout.Write(key)
	}
	if *certFile != "" {
		return writeNew(*certFile, cert, 0o644)
	}
	_, err = stdout.Write(cert)
	return err
}

// writeNew refuses to overwrite, so a second keygen cannot replace the key
// that IdPs already trust.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
