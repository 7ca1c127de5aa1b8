package controller

import (
	"regexp"
	"testing"

	"github.com/courier-dev/courier/operator/internal/resource/rabbitmq"
)

func TestGenerateAdminCredentials(t *testing.T) {
	a, b := generateAdminCredentials(), generateAdminCredentials()
	if a.Username == b.Username || a.Password == b.Password || a.ErlangCookie == b.ErlangCookie {
		t.Errorf("two generations share a value: %+v and %+v", a, b)
	}
	for _, c := range []rabbitmq.Credentials{a, b} {
		// Safe in a URL's userinfo and an environment variable unescaped.
		if !regexp.MustCompile(`^admin-[a-z2-7]{10}$`).MatchString(c.Username) {
			t.Errorf("username %q is not admin- and ten base32 letters", c.Username)
		}
		if !regexp.MustCompile(`^[A-Z2-7]{26}$`).MatchString(c.Password) {
			t.Errorf("password %q is not 26 base32 letters (130 bits)", c.Password)
		}
		// Erlang accepts up to 255 characters; 52 base32 letters are 260 bits.
		if !regexp.MustCompile(`^[A-Z2-7]{52}$`).MatchString(c.ErlangCookie) {
			t.Errorf("cookie %q is not 52 base32 letters", c.ErlangCookie)
		}
	}
}
