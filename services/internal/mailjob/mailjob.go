// Package mailjob is the one definition of an e-mail job: the JSON payload
// users and posts publish to the "emails" queue and the mailer consumes.
// Keeping encoding and validation here means a publisher can never produce a
// job the mailer would reject for its shape.
package mailjob

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"

	"github.com/google/uuid"
)

// Queue is the logical queue e-mail jobs travel on; the operator maps it to a
// physical queue through contract.QueueEnv(Queue).
const Queue = "emails"

// Template names the plain-text template the mailer renders.
type Template string

// The templates the mailer knows.
const (
	// TemplateWelcome greets a newly registered user.
	TemplateWelcome Template = "welcome"
	// TemplateComment tells a post's author about a new comment.
	TemplateComment Template = "comment"
)

// Keys of Job.Data. Each template requires the keys listed in RequiredData.
const (
	// DataName is the recipient's display name.
	DataName = "name"
	// DataPostID is the id of the commented post.
	DataPostID = "post_id"
	// DataPostTitle is the title of the commented post.
	DataPostTitle = "post_title"
	// DataCommenterName is the display name of the user who commented.
	DataCommenterName = "commenter_name"
	// DataComment is the comment's text.
	DataComment = "comment"
)

// RequiredData lists, per template, the Data keys a job must carry.
var RequiredData = map[Template][]string{
	TemplateWelcome: {DataName},
	TemplateComment: {DataName, DataPostID, DataPostTitle, DataCommenterName, DataComment},
}

// Job is one e-mail to send.
type Job struct {
	// ID identifies the job. The mailer uses it as the e-mail's Message-ID
	// and as its idempotency key, so a redelivered job is sent once.
	ID string `json:"id"`
	// To is the recipient's address.
	To string `json:"to"`
	// Template selects the body the mailer renders.
	Template Template `json:"template"`
	// Data fills the template; see RequiredData.
	Data map[string]string `json:"data"`
}

// New returns a job with a fresh random id. It does not validate; Encode does.
func New(template Template, to string, data map[string]string) Job {
	return Job{ID: uuid.NewString(), To: to, Template: template, Data: data}
}

// ErrInvalid is wrapped by every validation error, so a consumer can tell a
// job that will never be sendable (dead-letter it) from a transient failure.
var ErrInvalid = errors.New("invalid e-mail job")

// Validate reports every problem with the job at once.
func (j Job) Validate() error {
	var problems []string
	if strings.TrimSpace(j.ID) == "" {
		problems = append(problems, "id is empty")
	}
	if _, err := mail.ParseAddress(j.To); err != nil || strings.TrimSpace(j.To) == "" {
		problems = append(problems, fmt.Sprintf("to %q is not an e-mail address", j.To))
	}
	required, known := RequiredData[j.Template]
	if !known {
		problems = append(problems, fmt.Sprintf("unknown template %q", j.Template))
	}
	for _, key := range required {
		if strings.TrimSpace(j.Data[key]) == "" {
			problems = append(problems, fmt.Sprintf("data %q is missing", key))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(problems, "; "))
	}
	return nil
}

// Encode validates the job and returns its JSON form.
func Encode(j Job) ([]byte, error) {
	if err := j.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode e-mail job: %w", err)
	}
	return b, nil
}

// Decode parses and validates a job. Every error wraps ErrInvalid: a body
// that does not decode today never will.
func Decode(body []byte) (Job, error) {
	var j Job
	if err := json.Unmarshal(body, &j); err != nil {
		return Job{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := j.Validate(); err != nil {
		return Job{}, err
	}
	return j, nil
}
