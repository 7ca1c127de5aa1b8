//go:build ignore

// This file is copied into kube-network-policies' pkg/networkpolicy by
// hack/cluster/build.sh, which drops the "ignore" build constraint that keeps
// it out of Courier's own build.

package networkpolicy

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// nfqueueTarget sends a packet to user space through the xtables NFQUEUE
// target (revision 3) by way of nft_compat, in place of the nftables "queue"
// expression, which kernels built without CONFIG_NFT_QUEUE reject.
func nfqueueTarget(num uint16, bypass bool) expr.Any {
	// struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; }
	info := make([]byte, 6)
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	var flags uint16
	if bypass {
		flags |= 0x01 // NFQ_FLAG_BYPASS
	}
	binary.NativeEndian.PutUint16(info[4:], flags)
	unknown := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &unknown}
}
