package saml

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/crewjam/saml"
)

// loadMetadata reads and parses the IdP metadata from its configured source.
func (p *Provider) loadMetadata(ctx context.Context) (*saml.EntityDescriptor, error) {
	var data []byte
	switch {
	case p.cfg.MetadataURL != "":
		b, err := p.fetchMetadata(ctx)
		if err != nil {
			return nil, err
		}
		data = b
	case p.cfg.MetadataFile != "":
		f, err := os.Open(p.cfg.MetadataFile)
		if err != nil {
			return nil, fmt.Errorf("read IdP metadata: %w", err)
		}
		defer f.Close()
		b, err := readBounded(f, maxMetadataBytes)
		if err != nil {
			return nil, fmt.Errorf("read IdP metadata %s: %w", p.cfg.MetadataFile, err)
		}
		data = b
	default:
		data = []byte(p.cfg.MetadataXML)
	}
	md, err := parseIdPMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("IdP metadata: %w", err)
	}
	return md, nil
}

func (p *Provider) fetchMetadata(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.MetadataURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch IdP metadata: %w", err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch IdP metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch IdP metadata %s: status %s", p.cfg.MetadataURL, resp.Status)
	}
	b, err := readBounded(resp.Body, maxMetadataBytes)
	if err != nil {
		return nil, fmt.Errorf("fetch IdP metadata %s: %w", p.cfg.MetadataURL, err)
	}
	return b, nil
}

func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// parseIdPMetadata parses metadata holding one IdP and checks it can be used:
// it has an IDPSSODescriptor with at least one signing certificate.
func parseIdPMetadata(data []byte) (*saml.EntityDescriptor, error) {
	if err := checkNoDTD(data); err != nil {
		return nil, err
	}
	md, err := unmarshalIdPEntity(data)
	if err != nil {
		return nil, err
	}
	if md.EntityID == "" {
		return nil, errors.New("entity has no entityID")
	}
	if len(md.IDPSSODescriptors) == 0 {
		return nil, errors.New("no IDPSSODescriptor")
	}
	certs := 0
	for _, d := range md.IDPSSODescriptors {
		for _, k := range d.KeyDescriptors {
			if k.Use == "" || k.Use == "signing" {
				certs += len(k.KeyInfo.X509Data.X509Certificates)
			}
		}
	}
	if certs == 0 {
		return nil, errors.New("no signing certificate in the IDPSSODescriptor")
	}
	return md, nil
}

// checkNoDTD refuses XML with a document type declaration or any other
// <! directive besides comments and CDATA, before any parser sees it: SAML
// never needs a DTD, and refusing it rules out entity expansion (billion
// laughs) and external entities (XXE) whatever the parsers do.
func checkNoDTD(data []byte) error {
	rest := data
	for {
		i := bytes.Index(rest, []byte("<!"))
		if i < 0 {
			return nil
		}
		rest = rest[i+2:]
		if !bytes.HasPrefix(rest, []byte("--")) && !bytes.HasPrefix(rest, []byte("[CDATA[")) {
			return errors.New("XML with a DTD or entity declaration is not accepted")
		}
	}
}

// install makes md the IdP metadata future logins use.
func (p *Provider) install(md *saml.EntityDescriptor) error {
	sp := p.newSP(md)
	binding := saml.HTTPRedirectBinding
	if p.cfg.Binding == "post" {
		binding = saml.HTTPPostBinding
	}
	if sp.GetSSOBindingLocation(binding) == "" {
		return fmt.Errorf("IdP metadata has no SingleSignOnService for the %s binding", p.cfg.Binding)
	}
	p.sp.Store(sp)
	return nil
}

// RefreshMetadata fetches the IdP metadata from metadata_url again and uses
// it if it is valid. On failure the last good copy stays in use, the
// failure is counted (MetadataRefreshFailures) and returned.
func (p *Provider) RefreshMetadata(ctx context.Context) error {
	if p.cfg.MetadataURL == "" {
		return nil
	}
	md, err := p.loadMetadata(ctx)
	if err == nil {
		err = p.install(md)
	}
	if err != nil {
		p.refreshFailures.Add(1)
		return fmt.Errorf("saml %s: refresh metadata: %w", p.id, err)
	}
	return nil
}

// MetadataRefreshFailures counts failed metadata refreshes since Open, for
// the admin metrics.
func (p *Provider) MetadataRefreshFailures() uint64 { return p.refreshFailures.Load() }

func (p *Provider) startRefresh() {
	ctx, cancel := context.WithCancel(context.Background())
	p.stopRefresh = cancel
	p.refreshDone = make(chan struct{})
	go func() {
		defer close(p.refreshDone)
		t := time.NewTicker(p.cfg.MetadataRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := p.RefreshMetadata(ctx); err != nil && ctx.Err() == nil {
					p.log.Warn("saml metadata refresh failed; keeping the last good copy", "err", err)
				}
			}
		}
	}()
}

// Close stops the metadata refresh and waits for it to end. It is safe to
// call more than once.
func (p *Provider) Close() error {
	p.stopOnce.Do(func() {
		if p.stopRefresh != nil {
			p.stopRefresh()
			<-p.refreshDone
		}
	})
	return nil
}

// Metadata returns usher's SP metadata for this IdP: entity ID, the ACS
// (HTTP-POST), the SLO endpoint (HTTP-Redirect) and the SP certificate for
// signing and encryption.
func (p *Provider) Metadata() ([]byte, string, error) {
	md := p.sp.Load().Metadata()
	b, err := xml.MarshalIndent(md, "", "  ")
	if err != nil {
		return nil, "", fmt.Errorf("saml %s: marshal SP metadata: %w", p.id, err)
	}
	return append([]byte(xml.Header), b...), "application/samlmetadata+xml", nil
}

// unmarshalIdPEntity reads an EntityDescriptor, or the one IdP entity of an
// EntitiesDescriptor aggregate.
func unmarshalIdPEntity(data []byte) (*saml.EntityDescriptor, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	var root xml.StartElement
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, fmt.Errorf("malformed XML: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			root = se
			break
		}
	}
	if root.Name.Local != "EntitiesDescriptor" {
		md := &saml.EntityDescriptor{}
		if err := xml.Unmarshal(data, md); err != nil {
			return nil, err
		}
		return md, nil
	}
	var agg saml.EntitiesDescriptor
	if err := xml.Unmarshal(data, &agg); err != nil {
		return nil, err
	}
	var idps []*saml.EntityDescriptor
	var walk func(*saml.EntitiesDescriptor)
	walk = func(e *saml.EntitiesDescriptor) {
		for i := range e.EntityDescriptors {
			if len(e.EntityDescriptors[i].IDPSSODescriptors) > 0 {
				idps = append(idps, &e.EntityDescriptors[i])
			}
		}
		for i := range e.EntitiesDescriptors {
			walk(&e.EntitiesDescriptors[i])
		}
	}
	walk(&agg)
	if len(idps) != 1 {
		return nil, fmt.Errorf("metadata aggregate holds %d IdP entities, want exactly one", len(idps))
	}
	return idps[0], nil
}
