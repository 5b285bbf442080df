// derp-anchor: the real Tailscale DERP client (tailscale.com/derp/derphttp) and STUN client
// (tailscale.com/net/stun), driven by Weft's tests and benchmarks against weft-relay and derper.
// Each mode prints one JSON line on stdout when it is done; `load` also prints "measuring" and
// "measured" lines so the caller can sample the relay's CPU time over exactly that window.
package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go4.org/mem"
	"tailscale.com/derp"
	"tailscale.com/derp/derphttp"
	"tailscale.com/net/netmon"
	"tailscale.com/net/stun"
	"tailscale.com/types/key"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: derp-anchor pair|echo|probe|stun|load|idle [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	url := fs.String("url", "", "DERP URL, e.g. http://127.0.0.1:PORT/derp")
	keyA := fs.String("key", "", "private node key, base64 of 32 bytes")
	keyB := fs.String("key2", "", "second private node key (pair)")
	to := fs.String("to", "", "public node key to send to (send), base64")
	count := fs.Int("count", 10, "packets each way (pair, echo, send)")
	addr := fs.String("addr", "", "STUN server ip:port")
	pairs := fs.Int("pairs", 2, "sender/receiver pairs (load)")
	size := fs.Int("size", 1452, "packet bytes (load)")
	window := fs.Int("window", 32, "packets in flight per pair (load)")
	seconds := fs.Int("seconds", 5, "measured seconds (load), held seconds (idle)")
	conns := fs.Int("conns", 100, "connections (idle)")
	fs.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch os.Args[1] {
	case "pair":
		pair(ctx, *url, parsePriv(*keyA), parsePriv(*keyB), *count)
	case "echo":
		echo(ctx, *url, parsePriv(*keyA), *count)
	case "send":
		send(ctx, *url, parsePriv(*keyA), parsePub(*to), *count)
	case "probe":
		probe(ctx, *url, parsePriv(*keyA))
	case "stun":
		stunRequest(*addr)
	case "load":
		load(ctx, *url, *pairs, *size, *window, *seconds)
	case "idle":
		idle(ctx, *url, *conns, *seconds)
	default:
		fail("unknown mode " + os.Args[1])
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "derp-anchor:", msg)
	os.Exit(1)
}

func printJSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func parsePriv(s string) key.NodePrivate {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		fail("a key must be base64 of 32 bytes")
	}
	return key.NodePrivateFromRaw32(mem.B(b))
}

func parsePub(s string) key.NodePublic {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		fail("a key must be base64 of 32 bytes")
	}
	return key.NodePublicFromRaw32(mem.B(b))
}

func pubB64(k key.NodePublic) string {
	raw := k.Raw32()
	return base64.StdEncoding.EncodeToString(raw[:])
}

func connect(ctx context.Context, url string, priv key.NodePrivate) *derphttp.Client {
	c, err := derphttp.NewClient(priv, url, func(string, ...any) {}, netmon.NewStatic())
	if err != nil {
		fail(err.Error())
	}
	if err := c.Connect(ctx); err != nil {
		fail("connect: " + err.Error())
	}
	return c
}

// waitServerInfo reads up to the ServerInfo, which the server sends once it serves the client.
func waitServerInfo(c *derphttp.Client) {
	for {
		m, err := c.Recv()
		if err != nil {
			fail("waiting for ServerInfo: " + err.Error())
		}
		if _, ok := m.(derp.ServerInfoMessage); ok {
			return
		}
	}
}

// recvPackets reads until n packets arrived, skipping other messages; returns them by source.
func recvPackets(c *derphttp.Client, n int) ([]derp.ReceivedPacket, error) {
	var got []derp.ReceivedPacket
	for len(got) < n {
		m, err := c.Recv()
		if err != nil {
			return got, err
		}
		if p, ok := m.(derp.ReceivedPacket); ok {
			got = append(got, derp.ReceivedPacket{Source: p.Source, Data: slices.Clone(p.Data)})
		}
	}
	return got, nil
}

// pair: two clients; A sends `count` packets to B, then B answers each; A pings the server.
func pair(ctx context.Context, url string, a, b key.NodePrivate, count int) {
	ca, cb := connect(ctx, url, a), connect(ctx, url, b)
	defer ca.Close()
	defer cb.Close()
	// B must be served before A sends to it.
	waitServerInfo(cb)
	waitServerInfo(ca)
	for i := range count {
		if err := ca.Send(b.Public(), fmt.Appendf(nil, "a->b %d", i)); err != nil {
			fail("send: " + err.Error())
		}
	}
	atB, err := recvPackets(cb, count)
	if err != nil {
		fail("recv at b: " + err.Error())
	}
	okAB := 0
	for i, p := range atB {
		if p.Source == a.Public() && string(p.Data) == fmt.Sprintf("a->b %d", i) {
			okAB++
		}
		cb.Send(p.Source, append([]byte("b->a "), p.Data...))
	}
	atA, err := recvPackets(ca, count)
	if err != nil {
		fail("recv at a: " + err.Error())
	}
	okBA := 0
	for i, p := range atA {
		if p.Source == b.Public() && string(p.Data) == fmt.Sprintf("b->a a->b %d", i) {
			okBA++
		}
	}
	ping := [8]byte{'w', 'e', 'f', 't', 'p', 'i', 'n', 'g'}
	if err := ca.SendPing(ping); err != nil {
		fail("ping: " + err.Error())
	}
	pong := false
	for !pong {
		m, err := ca.Recv()
		if err != nil {
			fail("recv pong: " + err.Error())
		}
		p, ok := m.(derp.PongMessage)
		pong = ok && p == derp.PongMessage(ping)
	}
	printJSON(map[string]any{"aToB": okAB, "bToA": okBA, "pong": pong})
}

// echo: prints {"ready":PUB}, then sends every received packet back to its source, `count` times.
func echo(ctx context.Context, url string, priv key.NodePrivate, count int) {
	c := connect(ctx, url, priv)
	defer c.Close()
	waitServerInfo(c)
	printJSON(map[string]any{"ready": pubB64(priv.Public())})
	for range count {
		got, err := recvPackets(c, 1)
		if err != nil {
			fail("recv: " + err.Error())
		}
		if err := c.Send(got[0].Source, got[0].Data); err != nil {
			fail("send: " + err.Error())
		}
	}
	printJSON(map[string]any{"echoed": count})
}

// send: sends `count` packets to `to` and prints the packets that come back, as text.
func send(ctx context.Context, url string, priv key.NodePrivate, to key.NodePublic, count int) {
	c := connect(ctx, url, priv)
	defer c.Close()
	for i := range count {
		if err := c.Send(to, fmt.Appendf(nil, "go %d", i)); err != nil {
			fail("send: " + err.Error())
		}
	}
	got, err := recvPackets(c, count)
	if err != nil {
		fail("recv: " + err.Error())
	}
	var texts []string
	for _, p := range got {
		if p.Source == to {
			texts = append(texts, string(p.Data))
		}
	}
	printJSON(map[string]any{"received": texts})
}

// probe: connects and reports what the server says until it closes the connection (or 5 s).
func probe(ctx context.Context, url string, priv key.NodePrivate) {
	c := connect(ctx, url, priv)
	defer c.Close()
	go func() {
		time.Sleep(5 * time.Second)
		c.Close()
	}()
	var messages []string
	var closeErr string
	for {
		m, err := c.Recv()
		if err != nil {
			closeErr = err.Error()
			break
		}
		switch m := m.(type) {
		case derp.ServerInfoMessage:
			messages = append(messages, "serverInfo")
		case derp.HealthMessage:
			messages = append(messages, "health: "+m.Problem)
		default:
			messages = append(messages, fmt.Sprintf("%T", m))
		}
		if len(messages) > 10 {
			break
		}
	}
	printJSON(map[string]any{"messages": messages, "closed": closeErr})
}

func stunRequest(addr string) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		fail(err.Error())
	}
	defer conn.Close()
	tx := stun.NewTxID()
	buf := make([]byte, 1500)
	for range 3 {
		if _, err := conn.Write(stun.Request(tx)); err != nil {
			fail(err.Error())
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			continue
		}
		got, mapped, err := stun.ParseResponse(buf[:n])
		if err != nil {
			fail("bad response: " + err.Error())
		}
		if got != tx {
			fail("response to another transaction")
		}
		printJSON(map[string]any{"mapped": mapped.String(), "local": conn.LocalAddr().String()})
		return
	}
	fail("no STUN response")
}

// load: `pairs` sender→receiver pairs, each with at most `window` packets in flight; the first
// 8 bytes of a packet are its send time, so receivers measure one-way latency (one clock).
func load(ctx context.Context, url string, pairs, size, window, seconds int) {
	type pairState struct {
		bytes atomic.Int64
		// One credit per packet that may be in flight: the receiver gives one back per packet,
		// so the sender blocks (no spinning) while the window is full.
		credits chan struct{}
	}
	states := make([]*pairState, pairs)
	var mu sync.Mutex
	var latencies []time.Duration
	measuring := atomic.Bool{}
	stop := atomic.Bool{}
	var clients []*derphttp.Client
	var wg sync.WaitGroup
	for i := range pairs {
		st := &pairState{credits: make(chan struct{}, window)}
		for range window {
			st.credits <- struct{}{}
		}
		states[i] = st
		srcKey, dstKey := key.NewNode(), key.NewNode()
		src, dst := connect(ctx, url, srcKey), connect(ctx, url, dstKey)
		waitServerInfo(src)
		waitServerInfo(dst)
		clients = append(clients, src, dst)
		wg.Add(2)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for !stop.Load() {
				m, err := dst.Recv()
				if err != nil {
					break
				}
				p, ok := m.(derp.ReceivedPacket)
				if !ok || len(p.Data) < 8 {
					continue
				}
				select {
				case st.credits <- struct{}{}:
				default:
				}
				if measuring.Load() {
					st.bytes.Add(int64(len(p.Data)))
					local = append(local, time.Duration(time.Now().UnixNano()-int64(binary.BigEndian.Uint64(p.Data))))
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			lost := time.NewTimer(time.Hour)
			for !stop.Load() {
				select {
				case <-st.credits:
				default:
					lost.Reset(50 * time.Millisecond)
					select {
					case <-st.credits:
					case <-lost.C:
						// Nothing came back for 50 ms: count what is in flight as lost (a
						// relay may drop), so the window does not shrink for good.
						for len(st.credits) < window {
							st.credits <- struct{}{}
						}
						continue
					}
				}
				binary.BigEndian.PutUint64(buf, uint64(time.Now().UnixNano()))
				if err := src.Send(dstKey.Public(), buf); err != nil {
					break
				}
			}
		}()
	}
	time.Sleep(time.Second) // warm-up
	fmt.Println("measuring")
	measuring.Store(true)
	start := time.Now()
	time.Sleep(time.Duration(seconds) * time.Second)
	measuring.Store(false)
	elapsed := time.Since(start)
	fmt.Println("measured")
	stop.Store(true)
	var total int64
	for _, st := range states {
		total += st.bytes.Load()
	}
	// Closing the clients ends every Recv and Send, so all goroutines hand in their latencies.
	for _, c := range clients {
		c.Close()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fail("load goroutines did not stop")
	}
	mu.Lock()
	lat := slices.Clone(latencies)
	mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	printJSON(map[string]any{
		"bytes": total, "seconds": elapsed.Seconds(), "packets": len(lat),
		"p50us": pct(0.50), "p99us": pct(0.99),
	})
}

// idle: holds `conns` connected clients for `seconds`, printing "connected" once all are up.
func idle(ctx context.Context, url string, conns, seconds int) {
	var clients []*derphttp.Client
	for range conns {
		c := connect(ctx, url, key.NewNode())
		clients = append(clients, c)
	}
	for _, c := range clients {
		waitServerInfo(c)
	}
	fmt.Println("connected")
	time.Sleep(time.Duration(seconds) * time.Second)
	for _, c := range clients {
		c.Close()
	}
	printJSON(map[string]any{"conns": conns})
}
