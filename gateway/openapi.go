package gateway

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 description of every endpoint, served at /openapi.json.
//
//go:embed openapi.json
var openAPI []byte

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPI)
}
