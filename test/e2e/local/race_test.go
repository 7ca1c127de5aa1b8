//go:build race

package local_test

// raceEnabled builds the services with the race detector when the test
// itself runs under -race, so `go test -race` checks them too.
const raceEnabled = true
