// Command orders is chaosmem's demo service: a small HTTP "orders" API with the observability a
// real Go service has (expvar, net/http/pprof, Prometheus metrics) and the two ways the source
// article's services die: a session cache that is never evicted (leak mode) and a transient
// allocation spike. It sheds load with 503 above a bounded number of in-flight requests, so a
// 503 ratio under memory pressure means something.
//
// Configuration (flags win over the environment):
//
//	-addr / ORDERS_ADDR                  listen address, default 127.0.0.1:8080 (loopback only
//	                                     unless -allow-remote)
//	-max-inflight / ORDERS_MAX_INFLIGHT  in-flight limit of the shed routes, default 64
//	ORDERS_LEAK=1                        start with leak mode on
//	ORDERS_LEAK_SIZE                     bytes kept per request in leak mode, default 64Ki
//	ORDERS_LATENCY                       a simulated downstream call per /orders request ("5ms")
//	GOGC, GOMEMLIMIT, GODEBUG            honoured by the Go runtime itself
package main

import (
	"context"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.SetPrefix("orders: ")
	if err := run(); err != nil {
		log.Printf("error: %v", err)
		os.Exit(2)
	}
}

func envDefault(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return fallback
}

func run() error {
	maxDefault, err := parseCount("ORDERS_MAX_INFLIGHT", envDefault("ORDERS_MAX_INFLIGHT", "64"))
	if err != nil {
		return err
	}
	addr := flag.String("addr", envDefault("ORDERS_ADDR", "127.0.0.1:8080"), "listen address (host:port)")
	maxInflight := flag.Int("max-inflight", maxDefault, "requests served at once before shedding with 503")
	allowRemote := flag.Bool("allow-remote", false, "allow a non-loopback listen address")
	flag.Parse()
	if *maxInflight < 1 || *maxInflight > 1_000_000 {
		return fmt.Errorf("-max-inflight %d: expected 1..1000000", *maxInflight)
	}
	leakSize, err := parseSize("ORDERS_LEAK_SIZE", envDefault("ORDERS_LEAK_SIZE", "64Ki"), maxLeakSize)
	if err != nil {
		return err
	}
	latency, err := parseDuration("ORDERS_LATENCY", envDefault("ORDERS_LATENCY", "0s"), time.Minute)
	if err != nil {
		return err
	}
	leakOn := false
	switch v := os.Getenv("ORDERS_LEAK"); v {
	case "", "0", "false":
	case "1", "true":
		leakOn = true
	default:
		return fmt.Errorf("ORDERS_LEAK %q: expected 1 or 0", v)
	}

	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr %q: expected host:port (%v)", *addr, err)
	}
	if ip := net.ParseIP(host); !*allowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr %q: only loopback addresses unless -allow-remote (the service exposes pprof)", *addr)
	}

	app := newApp(*maxInflight, latency)
	app.leak.configure(leakOn, leakSize)
	publishExpvars(app)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", *addr, err)
	}
	srv := &http.Server{
		Handler:           app.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	gogc, memlimit := runtimeSettings()
	log.Printf("listening on %s (pid %d, go %s, GOGC=%d, GOMEMLIMIT=%d, max-inflight=%d, leak=%v)",
		ln.Addr(), os.Getpid(), runtime.Version(), gogc, memlimit, *maxInflight, leakOn)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case sig := <-stop:
		log.Printf("%v: shutting down", sig)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return nil
	}
}

var settings struct {
	once     sync.Once
	gogc     int
	memlimit int64
}

// runtimeSettings reads GOGC and GOMEMLIMIT as the runtime applied them (not as the environment
// spelled them): SetGCPercent returns the previous value, and a negative memory limit only
// reads. Read once: the service never changes them, and a concurrent set-and-restore could.
func runtimeSettings() (gogc int, memlimit int64) {
	settings.once.Do(func() {
		settings.gogc = debug.SetGCPercent(100)
		debug.SetGCPercent(settings.gogc)
		settings.memlimit = debug.SetMemoryLimit(-1)
	})
	return settings.gogc, settings.memlimit
}

func publishExpvars(app *app) {
	expvar.Publish("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
	expvar.Publish("runtime", expvar.Func(func() any {
		gogc, memlimit := runtimeSettings()
		return map[string]any{"gogc": gogc, "gomemlimit": memlimit, "gomaxprocs": runtime.GOMAXPROCS(0), "version": runtime.Version()}
	}))
	expvar.Publish("orders", expvar.Func(func() any {
		on, size, entries, bytes := app.leak.stats()
		return map[string]any{
			"inflight":      app.inflight.Load(),
			"max_inflight":  app.maxInflight,
			"stored":        app.store.len(),
			"leak":          on,
			"leak_size":     size,
			"leak_entries":  entries,
			"leak_bytes":    bytes,
			"spike_bytes":   app.spikeBytes.Load(),
			"shed_requests": app.shed.Load(),
		}
	}))
}

func parseCount(name, text string) (int, error) {
	n, err := strconv.Atoi(text)
	if err != nil || n < 1 || n > 1_000_000 {
		return 0, fmt.Errorf("%s %q: expected an integer 1..1000000", name, text)
	}
	return n, nil
}

func parseDuration(name, text string, max time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(text)
	if err != nil || d < 0 || d > max {
		return 0, fmt.Errorf("%s %q: expected a duration 0..%v such as 5ms", name, text, max)
	}
	return d, nil
}
