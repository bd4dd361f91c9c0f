// A small real microservice for SDP's example: it answers with its name, the
// branch and commit it was deployed from, and the sandbox it runs in.
package main

import (
	"context"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// greeting is what the feature branch of the example changes.
var greeting = "hello from main"

func env(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func main() {
	info := map[string]string{
		"service":  env("SDP_SERVICE", env("SERVICE_NAME", "eredar")),
		"branch":   env("SDP_BRANCH", env("BRANCH", "unknown")),
		"commit":   env("SDP_COMMIT", "unknown"),
		"sandbox":  env("SDP_SANDBOX", "none"),
		"greeting": greeting,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		answer := map[string]string{"path": r.URL.Path}
		for k, v := range info {
			answer[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(answer)
	})
	srv := &http.Server{Addr: ":" + env("PORT", "8080"), Handler: mux}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	log.Printf("%s (%s@%s) listening on %s", info["service"], info["branch"], info["commit"], srv.Addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
