// Go's net/http answering every request with "Hello, World!": the compiled
// reference of bench/http_load.py (the "go" server, run with GOMAXPROCS=1 so
// that it uses one core, as the Python servers do).
//
// Built by bench/http_load.py with Debian's golang (`go build`), then run as
// `hello_go -addr 127.0.0.1:PORT`.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "address to listen on")
	flag.Parse()
	body := []byte("Hello, World!")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
