// Package samples embeds the sample MicroserviceApp (the blog) and its
// demo Secrets, so the local stack (hack/local) runs the blog from the same
// declaration the cluster does: one place lists the services, their queues,
// calls, storage and environment.
package samples

import _ "embed"

// App is apps_v1alpha1_microserviceapp.yaml: the blog as a MicroserviceApp.
//
//go:embed apps_v1alpha1_microserviceapp.yaml
var App []byte

// Secrets is blog_secrets.yaml: the demo-only Secrets the sample's env
// refers to.
//
//go:embed blog_secrets.yaml
var Secrets []byte
