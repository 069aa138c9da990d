package saml

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/usherhq/usher/config"
)

// GenerateKeyPair makes a new SP key pair for a new installation: an
// RSA-3072 key and a self-signed certificate for commonName valid for
// validFor, both PEM encoded. IdPs treat the SP certificate as a container
// for the public key, so self-signed is what they expect.
func GenerateKeyPair(commonName string, validFor time.Duration) (keyPEM, certPEM []byte, err error) {
	if validFor <= 0 {
		return nil, nil, errors.New("saml keygen: validity must be positive")
	}
	key, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		return nil, nil, fmt.Errorf("saml keygen: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("saml keygen: serial: %w", err)
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("saml keygen: certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("saml keygen: marshal key: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return keyPEM, certPEM, nil
}

// loadKeyPair resolves and parses the SP key and certificate, and checks
// they belong together.
func loadKeyPair(keySecret, certSecret config.Secret) (*rsa.PrivateKey, *x509.Certificate, error) {
	keyText, err := keySecret.Resolve()
	if err != nil {
		return nil, nil, fmt.Errorf("sp_key: %w", err)
	}
	certText, err := certSecret.Resolve()
	if err != nil {
		return nil, nil, fmt.Errorf("sp_cert: %w", err)
	}
	key, err := parseKey([]byte(keyText))
	if err != nil {
		return nil, nil, fmt.Errorf("sp_key: %w", err)
	}
	cert, err := parseCert([]byte(certText))
	if err != nil {
		return nil, nil, fmt.Errorf("sp_cert: %w", err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, nil, errors.New("sp_cert does not hold the public key of sp_key")
	}
	return key, cert, nil
}

func parseKey(b []byte) (*rsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch block.Type {
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				// XML encryption to the SP needs RSA.
				return nil, fmt.Errorf("key is %T, want RSA", k)
			}
			return rk, nil
		}
	}
}

func parseCert(b []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}
