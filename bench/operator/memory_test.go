package main

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"testing"
)

// kept holds allocateKept's bytes, so they are in use when the profile is
// written.
var kept [][]byte

//go:noinline
func allocateKept() {
	for range 64 {
		kept = append(kept, make([]byte, 64<<10))
	}
}

func TestInUseUnder(t *testing.T) {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1
	allocateKept()
	runtime.GC()
	var buf bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
		t.Fatal(err)
	}
	got, err := inUseUnder(buf.Bytes(), "github.com/courier-dev/courier/bench/operator.allocateKept")
	if err != nil {
		t.Fatal(err)
	}
	if want := float64(64 * 64 << 10); got < want {
		t.Errorf("in use under allocateKept: %.0f bytes, want at least %.0f", got, want)
	}
	if got, err := inUseUnder(buf.Bytes(), eventsBroadcaster); err != nil || got != 0 {
		t.Errorf("in use under %s: %.0f, %v; want 0 in a process that sends no events", eventsBroadcaster, got, err)
	}
	if _, err := inUseUnder([]byte("not a profile"), eventsBroadcaster); err == nil {
		t.Error("a malformed profile parsed without error")
	}
	runtime.KeepAlive(kept)
}
