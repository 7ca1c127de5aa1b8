package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/brokertest"
)

// TestStateSurvivesPodReplacement stops the service and starts a new
// process in a fresh working directory with only the volume,
// COURIER_DATA_DIR, carried over: the posts are still there and ids
// continue, so a new post never takes an old one's id (and its author's
// rights over it).
func TestStateSurvivesPodReplacement(t *testing.T) {
	n := brokertest.StartNATS(t)
	users := newUsersUpstream(t)
	volume := t.TempDir()
	env := natsEnv(n.URL, users.URL)
	env[contract.EnvDataDir] = volume
	client := servicetest.HTTPClient()
	create := func(svc *servicetest.Running, title string) string {
		t.Helper()
		r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/posts", `{"title":"`+title+`","body":"b"}`, as(1)...)
		if r.Status != 201 {
			t.Fatalf("create post = %d %s", r.Status, r.Raw)
		}
		return r.Header.Get("Location")
	}

	first := t.TempDir()
	t.Chdir(first)
	old := servicetest.Start(t, run, "posts", env)
	engines := create(old, "On engines")
	if err := old.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
	if _, err := os.Stat(filepath.Join(volume, "posts.db")); err != nil {
		t.Fatalf("the database is not on the volume: %v", err)
	}
	if entries, _ := os.ReadDir(first); len(entries) != 0 {
		t.Errorf("the old working directory holds %v, want nothing outside the volume", entries)
	}

	t.Chdir(t.TempDir())
	replaced := servicetest.Start(t, run, "posts", env)
	if r := servicetest.Do(t, client, "GET", replaced.APIURL+engines, ""); r.Status != 200 || r.Body["title"] != "On engines" {
		t.Errorf("GET %s after the replacement = %d %s, want the post", engines, r.Status, r.Raw)
	}
	if next := create(replaced, "On looms"); next == engines || next == "" {
		t.Errorf("a new post after the replacement is at %q, want a new id after %s", next, engines)
	}
	if err := replaced.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
}
