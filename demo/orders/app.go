package main

import (
	"encoding/json"
	"expvar"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxBody      = 1 << 20
	maxItems     = 100
	maxListed    = 200
	storeSize    = 2000
	maxSpike     = 2 << 30
	maxSpikeHold = 30 * time.Second
	maxLeakSize  = 64 << 20
)

type app struct {
	maxInflight int64
	latency     time.Duration
	inflight    atomic.Int64
	shed        atomic.Int64
	spikeBytes  atomic.Int64
	store       *store
	leak        *sessionCache
	metrics     *metrics
}

func newApp(maxInflight int, latency time.Duration) *app {
	a := &app{maxInflight: int64(maxInflight), latency: latency, store: newStore(storeSize), leak: &sessionCache{}}
	a.metrics = newMetrics(a)
	return a
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/orders", a.instrument("/orders", a.limit(http.HandlerFunc(a.orders))))
	mux.Handle("/spike", a.instrument("/spike", a.limit(http.HandlerFunc(a.spike))))
	mux.Handle("/admin/leak", a.instrument("/admin/leak", http.HandlerFunc(a.adminLeak)))
	mux.Handle("/healthz", a.instrument("/healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})))
	mux.Handle("/metrics", a.metrics.handler())
	mux.Handle("/debug/vars", expvar.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/", a.instrument("other", http.HandlerFunc(http.NotFound)))
	return mux
}

// limit sheds a request with 503 when maxInflight requests are already being served: a bounded
// queue keeps a slow, memory-starved service answering (some requests fail fast) instead of
// piling up goroutines until the kernel kills it.
func (a *app) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.inflight.Add(1) > a.maxInflight {
			a.inflight.Add(-1)
			a.shed.Add(1)
			w.Header().Set("Retry-After", "1")
			httpError(w, http.StatusServiceUnavailable, "overloaded: too many requests in flight")
			return
		}
		defer a.inflight.Add(-1)
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// instrument counts every response in http_requests_total{code,method,path}; path is the route,
// never the raw URL, so label cardinality stays bounded.
func (a *app) instrument(path string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		a.metrics.observe(strconv.Itoa(sw.code), methodLabel(r.Method), path, time.Since(start))
	})
}

func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodPatch, http.MethodOptions:
		return m
	}
	return "other"
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

type item struct {
	SKU      string  `json:"sku"`
	Quantity int     `json:"quantity"`
	Price    float64 `json:"price"`
}

type order struct {
	ID        int64     `json:"id"`
	Customer  string    `json:"customer"`
	Items     []item    `json:"items"`
	Total     float64   `json:"total"`
	Note      string    `json:"note,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// store keeps the most recent orders in a ring: the service's steady-state heap is bounded,
// so any growth comes from the leak or the spike, not from the demo's own bookkeeping.
type store struct {
	mu     sync.Mutex
	ring   []order
	next   int
	lastID int64
}

func newStore(size int) *store { return &store{ring: make([]order, 0, size)} }

func (s *store) add(o order) order {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastID++
	o.ID = s.lastID
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, o)
	} else {
		s.ring[s.next] = o
		s.next = (s.next + 1) % cap(s.ring)
	}
	return o
}

func (s *store) recent(n int) []order {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > len(s.ring) {
		n = len(s.ring)
	}
	out := make([]order, 0, n)
	for i := 0; i < n; i++ {
		idx := (s.next - 1 - i + 2*len(s.ring)) % len(s.ring)
		if len(s.ring) < cap(s.ring) {
			idx = len(s.ring) - 1 - i
		}
		out = append(out, s.ring[idx])
	}
	return out
}

func (s *store) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ring)
}

func (a *app) orders(w http.ResponseWriter, r *http.Request) {
	if a.latency > 0 {
		time.Sleep(a.latency) // the downstream call a real service would make
	}
	a.leak.remember(r)
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		n := 20
		if v := r.URL.Query().Get("limit"); v != "" {
			parsed, err := strconv.Atoi(v)
			if err != nil || parsed < 0 || parsed > maxListed {
				httpError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: expected an integer 0..%d", v, maxListed))
				return
			}
			n = parsed
		}
		recent := a.store.recent(n)
		total := 0.0
		for _, o := range recent {
			total += o.Total
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"orders": recent, "count": len(recent), "total": total})
	case http.MethodPost:
		var in order
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		if err := dec.Decode(&in); err != nil {
			httpError(w, http.StatusBadRequest, "body: expected a JSON order: "+err.Error())
			return
		}
		if msg := validate(&in); msg != "" {
			httpError(w, http.StatusUnprocessableEntity, msg)
			return
		}
		in.CreatedAt = time.Now().UTC()
		saved := a.store.add(in)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(saved)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		httpError(w, http.StatusMethodNotAllowed, "method "+r.Method+": expected GET or POST")
	}
}

func validate(o *order) string {
	if o.Customer == "" || len(o.Customer) > 200 {
		return "customer: expected a non-empty string of at most 200 bytes"
	}
	if len(o.Items) == 0 || len(o.Items) > maxItems {
		return fmt.Sprintf("items: expected 1..%d items", maxItems)
	}
	if len(o.Note) > 4096 {
		return "note: expected at most 4096 bytes"
	}
	o.Total = 0
	for i, it := range o.Items {
		if it.SKU == "" || len(it.SKU) > 64 {
			return fmt.Sprintf("items[%d].sku: expected a non-empty string of at most 64 bytes", i)
		}
		if it.Quantity < 1 || it.Quantity > 10000 {
			return fmt.Sprintf("items[%d].quantity %d: expected 1..10000", i, it.Quantity)
		}
		if !(it.Price >= 0 && it.Price <= 1e6) {
			return fmt.Sprintf("items[%d].price %v: expected 0..1000000", i, it.Price)
		}
		o.Total += float64(it.Quantity) * it.Price
	}
	return ""
}

// spike allocates size bytes, touches every page so they count as resident, holds them for
// hold, then drops them: the transient allocation a batch job or a huge response makes.
func (a *app) spike(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size, err := parseSize("size", firstNonEmpty(q.Get("size"), "64Mi"), maxSpike)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	hold, err := parseDuration("hold", firstNonEmpty(q.Get("hold"), "0s"), maxSpikeHold)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	start := time.Now()
	buf := make([]byte, size)
	touch(buf)
	a.spikeBytes.Add(size)
	if hold > 0 {
		select {
		case <-time.After(hold):
		case <-r.Context().Done():
		}
	}
	a.spikeBytes.Add(-size)
	sum := int(buf[len(buf)-1]) // keep buf alive until here
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"allocated": size, "held_ms": time.Since(start).Milliseconds(), "check": sum})
}

func firstNonEmpty(v, fallback string) string {
	if v == "" {
		return fallback
	}
	return v
}

// touch writes one byte per page: fresh pages from the OS are not resident until written.
func touch(b []byte) {
	for i := 0; i < len(b); i += 4096 {
		b[i] = byte(i>>12) | 1
	}
	if len(b) > 0 {
		b[len(b)-1] = 1
	}
}

func (a *app) adminLeak(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		httpError(w, http.StatusMethodNotAllowed, "method "+r.Method+": expected POST")
		return
	}
	q := r.URL.Query()
	on, _, _, _ := a.leak.stats()
	switch v := q.Get("on"); v {
	case "1", "true":
		on = true
	case "0", "false":
		on = false
	case "":
	default:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("on %q: expected 1 or 0", v))
		return
	}
	_, size, _, _ := a.leak.stats()
	if v := q.Get("size"); v != "" {
		parsed, err := parseSize("size", v, maxLeakSize)
		if err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		size = parsed
	}
	switch v := q.Get("drop"); v {
	case "1", "true":
		a.leak.drop()
	case "", "0", "false":
	default:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("drop %q: expected 1 or 0", v))
		return
	}
	a.leak.configure(on, size)
	on, size, entries, bytes := a.leak.stats()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"leak": on, "size": size, "entries": entries, "bytes": bytes})
}

// sessionCache is the source article's leak: every request's "session" is cached and nothing
// ever evicts it. With leak mode off nothing is added (what is there stays, unless dropped).
type sessionCache struct {
	mu       sync.Mutex
	on       bool
	size     int64
	sessions map[string][]byte
	bytes    int64
	seq      int64
}

func (c *sessionCache) configure(on bool, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on, c.size = on, size
}

func (c *sessionCache) remember(r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on || c.size <= 0 {
		return
	}
	if c.sessions == nil {
		c.sessions = make(map[string][]byte)
	}
	c.seq++
	key := r.RemoteAddr + "|" + strings.TrimSpace(r.Header.Get("User-Agent")) + "|" + strconv.FormatInt(c.seq, 10)
	buf := make([]byte, c.size)
	touch(buf)
	c.sessions[key] = buf
	c.bytes += c.size
}

func (c *sessionCache) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sessions, c.bytes = nil, 0
}

func (c *sessionCache) stats() (on bool, size int64, entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.on, c.size, len(c.sessions), c.bytes
}
