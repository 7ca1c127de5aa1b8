package randid

import (
	"testing"

	"github.com/google/uuid"
)

func TestNewIsAVersion4UUID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := New()
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 4 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("New() = %q (version %v, variant %v, %v), want a version 4 UUID", id, u.Version(), u.Variant(), err)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}

// BenchmarkNew prices New next to what it replaces:
//
//	go test -run '^$' -bench . -benchmem ./services/kit/internal/randid/
func BenchmarkNew(b *testing.B) {
	b.Run("uuid.NewString", func(b *testing.B) {
		for b.Loop() {
			_ = uuid.NewString()
		}
	})
	b.Run("New", func(b *testing.B) {
		for b.Loop() {
			_ = New()
		}
	})
}
