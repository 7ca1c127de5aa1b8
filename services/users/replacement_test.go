package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/courier-dev/courier/services/internal/servicetest"
	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/brokertest"
)

// TestStateSurvivesPodReplacement plays a pod replacement: the process
// stops and a new one starts in a fresh working directory (a new container
// filesystem) with only the volume, COURIER_DATA_DIR, carried over. The
// accounts are still there (sign-in works), ids continue instead of
// restarting at 1, and a welcome job that was still in the outbox when the
// old process stopped (the broker was down) is published by the new one.
func TestStateSurvivesPodReplacement(t *testing.T) {
	n := brokertest.StartNATS(t)
	volume := t.TempDir()
	env := natsEnv(t, n.URL)
	delete(env, "DATABASE_PATH")
	env[contract.EnvDataDir] = volume
	client := servicetest.HTTPClient()
	signUp := func(svc *servicetest.Running, name, email string) int64 {
		t.Helper()
		r := servicetest.Do(t, client, "POST", svc.APIURL+"/api/users",
			`{"name":"`+name+`","email":"`+email+`","password":"compiler A-0"}`)
		if r.Status != 201 {
			t.Fatalf("sign up %s = %d %s", email, r.Status, r.Raw)
		}
		id, _ := r.Body["id"].(float64)
		return int64(id)
	}

	first := t.TempDir()
	t.Chdir(first)
	old := servicetest.Start(t, run, "users", env)
	grace := signUp(old, "Grace Hopper", "grace@example.com")
	n.Stop(t)
	ada := signUp(old, "Ada Lovelace", "ada@example.com") // its welcome job waits in the outbox
	if err := old.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
	if _, err := os.Stat(filepath.Join(volume, "users.db")); err != nil {
		t.Fatalf("the database is not on the volume: %v", err)
	}
	if entries, _ := os.ReadDir(first); len(entries) != 0 {
		t.Errorf("the old working directory holds %v, want nothing outside the volume", entries)
	}

	n.Start(t)
	jobs := servicetest.ConsumeJobs(t, contract.BrokerNATS, n.URL, "blog")
	t.Chdir(t.TempDir())
	replaced := servicetest.Start(t, run, "users", env)

	if r := servicetest.Do(t, client, "POST", replaced.APIURL+"/api/sessions",
		`{"email":"grace@example.com","password":"compiler A-0"}`); r.Status != 201 {
		t.Errorf("sign in after the replacement = %d %s, want 201", r.Status, r.Raw)
	}
	if next := signUp(replaced, "Edsger Dijkstra", "edsger@example.com"); next <= ada || ada <= grace {
		t.Errorf("ids %d, %d before the replacement and %d after, want them increasing", grace, ada, next)
	}

	// Grace's job went out before the replacement; Ada's only after it.
	// Edsger's follows; every job arrives once.
	seen := map[string]int{}
	for range 3 {
		job, _ := servicetest.NextJob(t, jobs)
		seen[job.To]++
	}
	for _, to := range []string{"grace@example.com", "ada@example.com", "edsger@example.com"} {
		if seen[to] != 1 {
			t.Errorf("welcome jobs by recipient %v, want one each for grace, ada and edsger", seen)
			break
		}
	}
	if err := replaced.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
}
