package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/courier-dev/courier/services/kit/contract"
	"github.com/courier-dev/courier/test/poll"
)

// TestRunReplacedMailerSendsOnce plays a pod replacement between two
// deliveries of one job. The first mailer sends it, records it on the
// volume and stops; the job comes again (the outbox relay publishes a row
// again when it stopped between publishing and marking it) to a new mailer
// process with a new working directory and the same COURIER_DATA_DIR,
// which acknowledges it without sending: the inbox holds one e-mail.
func TestRunReplacedMailerSendsOnce(t *testing.T) {
	w := newWorld(t)
	w.onVolume(t)
	pub := w.publisher(t)
	job := welcomeJob("ada@example.com", "Ada")

	old := w.start(t)
	publishJob(t, pub, job)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := w.sink.WaitCount(ctx, 1); err != nil {
		t.Fatalf("the first mailer sent nothing: %v", err)
	}
	poll.Within(t, 20*time.Second, "the job acked", func() bool {
		return consumedCount(t, old, contract.OutcomeSuccess) == 1 && w.backlog(t) == 0
	})
	if err := old.Stop(t); err != nil {
		t.Fatalf("run returned %v after SIGTERM", err)
	}
	if _, err := os.Stat(w.dbPath); err != nil {
		t.Fatalf("the record of sent jobs is not on the volume: %v", err)
	}

	t.Chdir(t.TempDir())
	replaced := w.start(t)
	publishJob(t, pub, job)
	poll.Within(t, 20*time.Second, "the job delivered again and acked", func() bool {
		return consumedCount(t, replaced, contract.OutcomeSuccess) == 1 && w.backlog(t) == 0
	})
	if n := len(w.sink.Messages()); n != 1 {
		t.Fatalf("sink has %d messages after the replacement, want exactly 1", n)
	}
	if replaced.Logs.Find("e-mail already sent; acknowledging the redelivered job") == nil {
		t.Error("the replacement mailer did not log the skipped resend")
	}
}
