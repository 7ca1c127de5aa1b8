package v1alpha1_test

import (
	"testing"

	"github.com/courier-dev/courier/operator/api/v1alpha1"
	"github.com/courier-dev/courier/services/kit/contract"
)

// TestPortNamesFollowContract keeps the API's port names, which the enum
// marker repeats as literals, equal to the contract's.
func TestPortNamesFollowContract(t *testing.T) {
	if v1alpha1.PortHTTP != contract.HTTPPortName || v1alpha1.PortAdmin != contract.AdminPortName {
		t.Errorf("port names %q/%q, contract %q/%q", v1alpha1.PortHTTP, v1alpha1.PortAdmin, contract.HTTPPortName, contract.AdminPortName)
	}
}
