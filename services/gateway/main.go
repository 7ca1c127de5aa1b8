// Command gateway is the blog's public API: it verifies sign-in tokens on
// write routes and forwards /api/users, /api/sessions and /api/posts to the
// users and posts services, with timeouts.
package main

import "github.com/courier-dev/courier/services/kit"

func main() { kit.Main(run) }
