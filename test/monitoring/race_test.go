//go:build race

package monitoring

// raceEnabled builds the services with the race detector when the test
// itself runs under -race, as test/e2e/local does, so both share one build.
const raceEnabled = true
