// Command barehandler is the baseline of the load benchmark in docs/PERFORMANCE.md: a
// gorilla/mux route that decodes the JSON body, hashes it and encodes a reply, with none of
// the gateway's validation, sandbox, proof or audit. The gateway's throughput is reported
// as a ratio of this one, measured in the same run.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/secureexec/secureexec/internal/procs"
)

type call struct {
	AgentID string `json:"agentId"`
	Tool    struct {
		Name string          `json:"name"`
		Args json.RawMessage `json:"args"`
	} `json:"tool"`
}

type reply struct {
	Tool      string `json:"tool"`
	ProofHash string `json:"proofHash"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:5092", "listen address")
	flag.Parse()
	procs.Raise() // as the gateway does, so that the benchmark's ratio compares like with like
	r := mux.NewRouter()
	r.HandleFunc("/exec/simulate", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var c call
		if err == nil {
			err = json.Unmarshal(body, &c)
		}
		if err != nil {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		sum := sha256.Sum256(body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(reply{Tool: c.Tool.Name, ProofHash: "0x" + hex.EncodeToString(sum[:])})
	}).Methods(http.MethodPost)
	log.Fatal(http.ListenAndServe(*addr, r))
}
