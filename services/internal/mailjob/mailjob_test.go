package mailjob_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/courier-dev/courier/services/internal/mailjob"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	jobs := []mailjob.Job{
		mailjob.New(mailjob.TemplateWelcome, "ada@example.com", map[string]string{mailjob.DataName: "Ada"}),
		mailjob.New(mailjob.TemplateComment, "Ada <ada@example.com>", map[string]string{
			mailjob.DataName: "Ada", mailjob.DataPostID: "7", mailjob.DataPostTitle: "Engines",
			mailjob.DataCommenterName: "Charles", mailjob.DataComment: "Splendid.",
		}),
	}
	for _, job := range jobs {
		body, err := mailjob.Encode(job)
		if err != nil {
			t.Fatalf("encode %+v: %v", job, err)
		}
		got, err := mailjob.Decode(body)
		if err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		if !reflect.DeepEqual(got, job) {
			t.Errorf("round trip: got %+v, want %+v", got, job)
		}
	}
}

func TestNewGivesUniqueIDs(t *testing.T) {
	a := mailjob.New(mailjob.TemplateWelcome, "a@example.com", nil)
	b := mailjob.New(mailjob.TemplateWelcome, "a@example.com", nil)
	if a.ID == "" || a.ID == b.ID {
		t.Fatalf("ids %q and %q: want distinct and non-empty", a.ID, b.ID)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string // substrings of the error
	}{
		{"not json", `{`, []string{"unexpected end"}},
		{"wrong type", `{"id": 5}`, []string{"cannot unmarshal"}},
		{"empty object", `{}`, []string{"id is empty", "not an e-mail address", `unknown template ""`}},
		{"bad address", `{"id":"1","to":"nobody","template":"welcome","data":{"name":"N"}}`, []string{`to "nobody"`}},
		{"unknown template", `{"id":"1","to":"a@example.com","template":"invoice"}`, []string{`unknown template "invoice"`}},
		{"missing data", `{"id":"1","to":"a@example.com","template":"comment","data":{"name":"N","comment":" "}}`,
			[]string{`"post_id" is missing`, `"post_title" is missing`, `"commenter_name" is missing`, `"comment" is missing`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mailjob.Decode([]byte(tt.body))
			if !errors.Is(err, mailjob.ErrInvalid) {
				t.Fatalf("err = %v, want one wrapping ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestEncodeValidates(t *testing.T) {
	if _, err := mailjob.Encode(mailjob.New(mailjob.TemplateWelcome, "a@example.com", nil)); !errors.Is(err, mailjob.ErrInvalid) {
		t.Fatalf("encode of a welcome job without a name: err = %v, want ErrInvalid", err)
	}
}
