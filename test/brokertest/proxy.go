package brokertest

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy in front of a broker that can stall: while stalled
// it accepts connections and keeps them open but passes no byte in either
// direction, which is what a broker that is overloaded, paused or behind a
// broken network looks like to a client: no refusal, no answer, only
// timeouts. Resume lets traffic through again; connections accepted while
// stalled are closed then (their clients have long given up on them).
type Proxy struct {
	// Addr is the proxy's host:port on 127.0.0.1.
	Addr string

	target string
	ln     net.Listener

	mu      sync.Mutex
	open    chan struct{} // closed while traffic flows
	held    []net.Conn    // accepted while stalled
	conns   map[net.Conn]struct{}
	closed  bool
	stallOn []byte // see StallWhenClientSends
	wg      sync.WaitGroup
	accepts atomic.Int64
}

// StartProxy starts a proxy to target (host:port) for t, passing traffic
// unless stalled is true, and closes it when t ends.
func StartProxy(t testing.TB, target string, stalled bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, open: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	if !stalled {
		close(p.open)
	}
	p.wg.Go(p.serve)
	t.Cleanup(p.Close)
	return p
}

// Accepts is the number of connections the proxy accepted so far: each is
// one attempt of a client to reach the broker.
func (p *Proxy) Accepts() int64 { return p.accepts.Load() }

// Stall stops passing bytes, on open connections and new ones alike.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

// StallWhenClientSends stalls the proxy, as Stall does, the first time a
// client sends a chunk containing marker, before passing that chunk on: a
// broker that goes silent in the middle of a conversation, for example at
// a client's first JetStream API request ("$JS.API") or at the declare of a
// named exchange.
func (p *Proxy) StallWhenClientSends(marker string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallOn = []byte(marker)
}

// stallIfMarked stalls the proxy if chunk carries the marker.
func (p *Proxy) stallIfMarked(chunk []byte) {
	p.mu.Lock()
	hit := p.stallOn != nil && bytes.Contains(chunk, p.stallOn)
	if hit {
		p.stallOn = nil
	}
	p.mu.Unlock()
	if hit {
		p.Stall()
	}
}

// Resume passes bytes again and closes the connections accepted while
// stalled.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
	for _, c := range p.held {
		_ = c.Close()
	}
	p.held = nil
}

// gate returns a channel that is closed while traffic may flow.
func (p *Proxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepts.Add(1)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[c] = struct{}{}
		select {
		case <-p.open:
			p.mu.Unlock()
			p.wg.Go(func() { p.forward(c) })
		default:
			// Never dialled through: a stalled broker does not get the
			// connection either.
			p.held = append(p.held, c)
			p.mu.Unlock()
		}
	}
}

func (p *Proxy) forward(c net.Conn) {
	defer p.forget(c)
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.forget(up)
	var wg sync.WaitGroup
	wg.Go(func() { p.copy(up, c, true) })
	wg.Go(func() { p.copy(c, up, false) })
	wg.Wait()
}

// copy passes bytes from src to dst, each chunk only while the gate is
// open, and closes both ends when either side ends. fromClient says src is
// the client, whose chunks may carry the stall marker.
func (p *Proxy) copy(dst, src net.Conn, fromClient bool) {
	defer func() {
		_ = dst.Close()
		_ = src.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromClient {
				p.stallIfMarked(buf[:n])
			}
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) forget(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	select {
	case <-p.open:
	default:
		close(p.open) // releases copies waiting at the gate
	}
	p.mu.Unlock()
	p.wg.Wait()
}
