package controller

import (
	appsv1 "k8s.io/api/apps/v1"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
)

// scope carries the state of one reconcile of one app, from the apply steps
// to the deferred status update.
type scope struct {
	// app is the app being reconciled; its status is rewritten in place.
	app *v1alpha1.MicroserviceApp
	// original is app as read, the base of the status patch and of the
	// "did anything change" comparison.
	original *v1alpha1.MicroserviceApp
	// wanted holds a key (see wantedKey) per object the spec asks for,
	// whether or not applying it succeeded, so pruning never deletes them.
	wanted map[string]bool
	// deployments are the services' Deployments as the API server last
	// returned them, by service name; status is computed from them.
	deployments map[string]*appsv1.Deployment
}

func newScope(app *v1alpha1.MicroserviceApp) *scope {
	return &scope{
		app:         app,
		original:    app.DeepCopy(),
		wanted:      map[string]bool{},
		deployments: map[string]*appsv1.Deployment{},
	}
}

func wantedKey(kind, name string) string { return kind + "/" + name }
