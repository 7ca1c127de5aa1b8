package stack

import (
	"bytes"
	"io"
	"sync"
)

// prefixWriter writes whole lines to w, each with prefix. exec.Cmd copies a
// child's output in arbitrary chunks; buffering to line ends keeps two
// services' lines from interleaving mid-line.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
	buf    []byte
}

// outputMu serialises writes of all prefixWriters, which share os.Stdout.
var outputMu sync.Mutex

func newPrefixWriter(w io.Writer, prefix string) *prefixWriter {
	return &prefixWriter{w: w, prefix: []byte(prefix)}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		line := make([]byte, 0, len(p.prefix)+i+1)
		line = append(append(line, p.prefix...), p.buf[:i+1]...)
		outputMu.Lock()
		_, err := p.w.Write(line)
		outputMu.Unlock()
		p.buf = p.buf[i+1:]
		if err != nil {
			return len(b), nil // a closed terminal must not kill the service's output pipe
		}
	}
	return len(b), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
