package main

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// maxPasswordBytes is bcrypt's input limit; longer passwords are refused
// rather than silently truncated.
const maxPasswordBytes = 72

// bcryptHasher hashes and checks passwords with bcrypt.
type bcryptHasher struct {
	cost int
	// dummy is a hash compared against when the e-mail is unknown, so a
	// failed login takes as long whether or not the account exists.
	dummy []byte
}

func newBcryptHasher(cost int) (*bcryptHasher, error) {
	dummy, err := bcrypt.GenerateFromPassword([]byte("not anybody's password"), cost)
	if err != nil {
		return nil, fmt.Errorf("bcrypt cost %d: %w", cost, err)
	}
	return &bcryptHasher{cost: cost, dummy: dummy}, nil
}

// Hash returns the bcrypt hash of password.
func (h *bcryptHasher) Hash(password string) ([]byte, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), h.cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return hash, nil
}

// Matches reports whether password matches hash. A nil hash (unknown
// account) is checked against the dummy hash and never matches.
func (h *bcryptHasher) Matches(hash []byte, password string) (bool, error) {
	known := hash != nil
	if !known {
		hash = h.dummy
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	switch {
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("check password: %w", err)
	}
	return known, nil
}
