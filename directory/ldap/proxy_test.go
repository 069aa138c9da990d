package ldap

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	ber "github.com/go-asn1-ber/asn1-ber"
	goldap "github.com/go-ldap/ldap/v3"
)

// testProxy sits between the connector and slapd on loopback (plain LDAP,
// which the connector allows there) and fails the way a network or a
// server does: drop closes every open connection (and with refuse every
// later one at once, as a server that is down); arm answers each later
// page of the people search (a search under peopleBase with a paging
// cookie) with a result code instead of passing it on, as a busy or
// limited server would.
type testProxy struct {
	ln         net.Listener
	target     string
	peopleBase string
	served     sync.WaitGroup

	mu     sync.Mutex
	open   []net.Conn
	refuse bool
	dials  int
	code   uint16
}

func newTestProxy(t *testing.T, target, peopleBase string) *testProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{ln: ln, target: strings.TrimPrefix(target, "ldap://"), peopleBase: peopleBase}
	t.Cleanup(func() { ln.Close(); p.drop(false); p.served.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.served.Add(1)
			go func() { defer p.served.Done(); p.serve(c) }()
		}
	}()
	return p
}

func (p *testProxy) url() string { return "ldap://" + p.ln.Addr().String() }

// drop closes every open connection; refuse makes later ones close at
// once.
func (p *testProxy) drop(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		c.Close()
	}
	p.open = nil
	p.refuse = refuse
}

func (p *testProxy) arm(code uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.code = code
}

// connections is how many connections the connector opened.
func (p *testProxy) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dials
}

// connect dials slapd for c, unless the proxy refuses; under the lock, so
// that a drop sees every connection.
func (p *testProxy) connect(c net.Conn) (net.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dials++
	if p.refuse {
		return nil, errors.New("refused")
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return nil, err
	}
	p.open = append(p.open, c, up)
	return up, nil
}

func (p *testProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := p.connect(c)
	if err != nil {
		return
	}
	defer up.Close()
	var wmu sync.Mutex // client writes: slapd's answers and ours
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 {
				wmu.Lock()
				c.Write(buf[:n])
				wmu.Unlock()
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	for {
		pkt, err := ber.ReadPacket(c)
		if err != nil {
			return
		}
		if code, id, ok := p.fault(pkt); ok {
			wmu.Lock()
			c.Write(searchDone(id, code).Bytes())
			wmu.Unlock()
			continue
		}
		if _, err := up.Write(pkt.Bytes()); err != nil {
			return
		}
	}
}

// fault reports whether pkt is a later page of the people search while
// the proxy is armed.
func (p *testProxy) fault(pkt *ber.Packet) (uint16, int64, bool) {
	p.mu.Lock()
	code := p.code
	p.mu.Unlock()
	if code == 0 || len(pkt.Children) < 3 || pkt.Children[1].Tag != goldap.ApplicationSearchRequest {
		return 0, 0, false
	}
	req := pkt.Children[1]
	if len(req.Children) == 0 || !strings.EqualFold(fmt.Sprint(req.Children[0].Value), p.peopleBase) {
		return 0, 0, false
	}
	for _, child := range pkt.Children[2].Children {
		ctl, err := goldap.DecodeControl(child)
		if err != nil {
			continue
		}
		if pg, ok := ctl.(*goldap.ControlPaging); ok && len(pg.Cookie) > 0 && pg.PagingSize > 0 {
			id, _ := pkt.Children[0].Value.(int64)
			return code, id, true
		}
	}
	return 0, 0, false
}

func searchDone(id int64, code uint16) *ber.Packet {
	p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Response")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "MessageID"))
	done := ber.Encode(ber.ClassApplication, ber.TypeConstructed, goldap.ApplicationSearchResultDone, nil, "Search Result Done")
	done.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(code), "resultCode"))
	done.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "matchedDN"))
	done.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "injected by the test", "diagnosticMessage"))
	p.AppendChild(done)
	return p
}
