//go:build unix

package httpbench

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user plus system) the process has used so
// far, across all its threads, the garbage collector's included.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
