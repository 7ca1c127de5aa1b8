// Command posts is the blog's posts service: posts and their comments. A new
// comment queues an e-mail to the post's author, whose address it asks the
// users service for.
package main

import "github.com/courier-dev/courier/services/kit"

func main() { kit.Main(run) }
