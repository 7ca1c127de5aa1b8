package natsbroker

import "github.com/nats-io/nkeys"

// AdminCreds issues an unrestricted user of the account, as the operator
// does for itself, so tests can tamper with the topology.
func AdminCreds(accountSeed string) ([]byte, error) {
	kp, err := nkeys.FromSeed([]byte(accountSeed))
	if err != nil {
		return nil, err
	}
	return newUserCreds(kp, "test-admin", adminUserTTL)
}
