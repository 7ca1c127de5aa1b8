// Command pause is the sandbox ("pause") container of the local node
// (hack/cluster): it holds a pod's namespaces open until it is told to stop,
// and reaps the zombies of a pod that shares its process namespace, as
// registry.k8s.io/pause does. It is built here because no image registry is
// reachable; build.sh imports it as the image the CRI pins.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every exited child, so none stays a zombie.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
