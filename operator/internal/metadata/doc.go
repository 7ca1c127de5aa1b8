// Package metadata is the one place for the labels, names and owner
// references of every object the operator writes: the services' objects,
// the managed broker's objects (of every broker kind) and the connection
// Secrets. Names derive only from the app's and the service's names, never
// generateName, so a stale cache can at worst re-apply an object, never
// create a second one.
//
// It is a leaf: it imports nothing of Courier's but the API types, so the
// builders (package resource and its broker packages) and the broker
// drivers can all import it.
package metadata
