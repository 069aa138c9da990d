package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSlowClientsNextToANormalUser floods usher with clients that open a
// request and trickle its body (a byte every half second, far below
// server.body_min_rate), from four addresses, reconnecting whenever usher
// cuts them off: half post to /usher/login, which usher reads itself, half
// upload through the proxy with a valid session, which holds an upstream
// connection too. Meanwhile a normal user browses from another address.
//
// The normal user must be served throughout; usher's file descriptors
// must stay within what max_conns_per_client allows the four addresses,
// and go back down when the flood stops. The figures are logged (-v).
//
// The flood runs in a child process (this test binary), so the
// descriptors and memory counted here are usher's (and the in-process
// test upstream's). USHER_LOAD=1 raises it from 2,000 to 19,000
// connections and from 4 s to 15 s.
func TestSlowClientsNextToANormalUser(t *testing.T) {
	if testing.Short() {
		t.Skip("floods usher for seconds")
	}
	clients, dur := 2000, 4*time.Second
	if os.Getenv("USHER_LOAD") != "" {
		clients, dur = 19000, 15*time.Second
	}
	const perClient = 100
	sources := []string{"127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"}

	// An upstream that reads upload bodies to the end, as Confluence does.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "read %d", n)
	}))
	defer up.Close()
	e := startEnvWith(t, envOptions{Upstream: up.URL, Server: fmt.Sprintf(
		"  body_read_timeout: 1s\n  body_min_rate: 1024\n  max_conns_per_client: %d\n", perClient)})
	user := e.browser()
	wantStatus(t, e.login(user, "/", "acme", "alice", "pw-alice"), http.StatusOK)
	var cookie string
	for _, ck := range user.Jar.Cookies(mustURL(e.url)) {
		cookie = ck.Name + "=" + ck.Value
	}
	// The normal user comes from 127.0.0.2, away from the flood.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	user.Transport = &http.Transport{DialContext: d.DialContext}

	runtime.GC()
	base := serverUsage()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSlowClientsProcess$")
	cmd.Env = append(os.Environ(), "USHER_SLOW_CLIENTS="+strings.Join([]string{
		strings.TrimPrefix(e.url, "http://"), strconv.Itoa(clients), strings.Join(sources, ","), cookie, dur.String(),
	}, "|"))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	summary := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "SLOW "); ok {
				summary <- l
			}
		}
		close(summary)
	}()

	// Browse while the flood runs, and watch usher.
	peak := base
	var served, failed int
	var worst time.Duration
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		start := time.Now()
		resp, err := user.Get(e.url + "/browse/X-1")
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			failed++
			if err == nil {
				resp.Body.Close()
			}
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			served++
			worst = max(worst, took)
		}
		peak = peak.max(serverUsage())
		time.Sleep(100 * time.Millisecond)
	}
	var sum map[string]int
	if err := json.Unmarshal([]byte(<-summary), &sum); err != nil {
		t.Fatalf("flood summary: %v", err)
	}
	cmd.Wait()
	// Let usher close what the flood left behind.
	var after resources
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		runtime.GC()
		if after = serverUsage(); after.fds <= base.fds+20 || time.Now().After(deadline) {
			break
		}
	}

	t.Logf("flood: %v", sum)
	t.Logf("normal user: %d served, %d failed, slowest %s", served, failed, worst.Round(time.Millisecond))
	t.Logf("usher: fds %d before, %d at peak, %d after; heap %.1f MB before, %.1f MB at peak; goroutines %d before, %d at peak",
		base.fds, peak.fds, after.fds, base.heapMB, peak.heapMB, base.goroutines, peak.goroutines)

	if failed > 0 || served == 0 {
		t.Errorf("the normal user was not served: %d failed, %d served", failed, served)
	}
	if sum["upload 408"] == 0 || sum["upload other answer"] > 0 {
		t.Error("slow uploads were not all cut off with 408")
	}
	if sum["login 408"]+sum["login other answer"] == 0 {
		t.Error("no slow login form was cut off")
	}
	if sum["refused"] == 0 {
		t.Error("no connection was refused for the per-client limit")
	}
	// Each flooding connection usher holds costs it at most three
	// descriptors: the client's, and for a proxied upload the upstream
	// connection on both of its ends (the test upstream lives here too).
	if limit := base.fds + 3*perClient*len(sources) + 100; peak.fds > limit {
		t.Errorf("usher held %d descriptors, want at most %d", peak.fds, limit)
	}
	if after.fds > base.fds+20 {
		t.Errorf("usher still holds %d descriptors after the flood (%d before)", after.fds, base.fds)
	}
}

type resources struct {
	fds, goroutines int
	heapMB          float64
}

func serverUsage() resources {
	ents, _ := os.ReadDir("/proc/self/fd")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return resources{fds: len(ents), goroutines: runtime.NumGoroutine(), heapMB: float64(ms.HeapInuse) / (1 << 20)}
}

func (a resources) max(b resources) resources {
	return resources{fds: max(a.fds, b.fds), goroutines: max(a.goroutines, b.goroutines), heapMB: max(a.heapMB, b.heapMB)}
}

// TestSlowClientsProcess is the flood of TestSlowClientsNextToANormalUser
// when this binary runs as its child; otherwise it does nothing.
func TestSlowClientsProcess(t *testing.T) {
	spec := os.Getenv("USHER_SLOW_CLIENTS")
	if spec == "" {
		t.Skip("runs only as the slow-clients flood")
	}
	f := strings.Split(spec, "|")
	target, sources, cookie := f[0], strings.Split(f[2], ","), f[3]
	n, _ := strconv.Atoi(f[1])
	dur, _ := time.ParseDuration(f[4])
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()

	var dialed, refused atomic.Int64
	var cut, other [2]atomic.Int64 // [login, upload]
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(sources[i%len(sources)])}, Timeout: 5 * time.Second}
			head := "POST /usher/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n"
			if i%2 == 1 {
				head = "PUT /upload HTTP/1.1\r\nHost: x\r\nCookie: " + cookie + "\r\nContent-Length: 100000000\r\n\r\n"
			}
			for ctx.Err() == nil {
				switch trickle(ctx, d, target, head) {
				case http.StatusRequestTimeout:
					cut[i%2].Add(1)
				case 0:
					refused.Add(1)
					time.Sleep(100 * time.Millisecond) // as a real flood would, keep trying
				case -1: // still trickling when the flood ended
				default:
					other[i%2].Add(1)
				}
				dialed.Add(1)
			}
		}()
	}
	wg.Wait()
	b, _ := json.Marshal(map[string]int64{
		"connections": dialed.Load(), "refused": refused.Load(),
		"login 408": cut[0].Load(), "login other answer": other[0].Load(),
		"upload 408": cut[1].Load(), "upload other answer": other[1].Load(),
	})
	fmt.Printf("SLOW %s\n", b)
}

// trickle opens one connection, sends head and then a byte every half
// second. It returns the status usher answered, 0 when usher closed the
// connection without an answer, or -1 when ctx ended first.
func trickle(ctx context.Context, d *net.Dialer, target, head string) int {
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return 0
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	answer := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			if ctx.Err() != nil {
				answer <- -1
			} else {
				answer <- 0
			}
			return
		}
		resp.Body.Close()
		answer <- resp.StatusCode
	}()
	if _, err := io.WriteString(c, head); err != nil {
		return <-answer
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case code := <-answer:
			return code
		case <-t.C:
			if _, err := c.Write([]byte("x")); err != nil {
				return <-answer
			}
		}
	}
}
