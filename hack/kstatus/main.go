// kstatus: prints what Flux's health checks conclude about Kubernetes objects, using the
// library Flux uses (sigs.k8s.io/cli-utils/pkg/kstatus/status). For the rollguard tests.
//
// Reads one JSON object per line on stdin; for each prints one JSON line:
// {"status": "Current|InProgress|Failed|...", "message": "..."}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		// Decoded as the API machinery does (integers stay int64), not as encoding/json.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: not a Kubernetes object: %v\n", err)
			os.Exit(2)
		}
		res, err := status.Compute(obj)
		if err != nil {
			_ = out.Encode(map[string]string{"status": "Error", "message": err.Error()})
			continue
		}
		_ = out.Encode(map[string]string{"status": res.Status.String(), "message": res.Message})
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: reading stdin: %v\n", err)
		os.Exit(2)
	}
}
