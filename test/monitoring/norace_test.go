//go:build !race

package monitoring

// raceEnabled is false without -race; see race_test.go.
const raceEnabled = false
