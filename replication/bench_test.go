package replication

import (
	"fmt"
	"testing"
)

// The benchmarks run between two embedded etcd servers without fsync, to track the mirror's own cost.
// bench/run.sh compares it with etcdctl make-mirror on real etcd processes.

// BenchmarkFullSync measures the first sync of 10,000 keys of 200 bytes.
func BenchmarkFullSync(b *testing.B) {
	const keys = 10000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p := newPair(b)
		fill(b, p.sc, "k/", keys, string(make([]byte, 200)))
		b.StartTimer()
		r := p.start(b)
		p.waitApplied(b, r)
		b.StopTimer()
		r.stop(b)
	}
	b.ReportMetric(float64(keys*b.N)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkStreaming measures how fast a running mirror applies 20,000 single-key puts that the source
// took while the mirror was stopped (a backlog replayed from the checkpoint).
func BenchmarkStreaming(b *testing.B) {
	const puts = 20000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		p := newPair(b)
		r := p.start(b)
		p.waitApplied(b, r)
		r.stop(b)
		ctx := ctxT(b)
		for j := 0; j < puts; j++ {
			if _, err := p.sc.Put(ctx, fmt.Sprintf("%sk/%06d", srcPrefix, j%1000), fmt.Sprint(j)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		r = p.start(b)
		p.waitApplied(b, r)
		b.StopTimer()
		if s := r.Status(); len(s.Resyncs) != 0 {
			b.Fatalf("replay did a full sync: %v", s.Resyncs)
		}
		r.stop(b)
	}
	b.ReportMetric(float64(puts*b.N)/b.Elapsed().Seconds(), "events/s")
}
