// Command users is the blog's accounts service: registration (which queues
// a welcome e-mail), sign-in with signed, expiring tokens, and user lookup.
package main

import "github.com/courier-dev/courier/services/kit"

func main() { kit.Main(run) }
