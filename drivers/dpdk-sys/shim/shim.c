/*
 * tlsgate's C shim over DPDK.
 *
 * DPDK puts its hot-path functions (rx/tx burst, mbuf alloc/free, rte_errno, the TSC)
 * in headers as `static inline`; they have no symbol to link against, so each one used
 * gets a one-line wrapper here. Setup functions whose arguments are large, version-
 * dependent structs (rte_eth_conf, rte_eth_dev_info, rte_eth_stats) are wrapped with
 * flat structs of our own, so Rust never mirrors those layouts.
 *
 * The few mbuf fields that Rust reads directly (to keep per-packet work out of C) are
 * pinned by the _Static_asserts below: if a DPDK release moves one, this file stops
 * compiling instead of the dataplane reading garbage.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

_Static_assert(offsetof(struct rte_mbuf, buf_addr) == 0, "rte_mbuf.buf_addr moved");
_Static_assert(offsetof(struct rte_mbuf, data_off) == 16, "rte_mbuf.data_off moved");
_Static_assert(offsetof(struct rte_mbuf, nb_segs) == 20, "rte_mbuf.nb_segs moved");
_Static_assert(offsetof(struct rte_mbuf, port) == 22, "rte_mbuf.port moved");
_Static_assert(offsetof(struct rte_mbuf, pkt_len) == 36, "rte_mbuf.pkt_len moved");
_Static_assert(offsetof(struct rte_mbuf, data_len) == 40, "rte_mbuf.data_len moved");
_Static_assert(offsetof(struct rte_mbuf, buf_len) == 54, "rte_mbuf.buf_len moved");
_Static_assert(RTE_PKTMBUF_HEADROOM == 128, "headroom changed");

uint16_t tg_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t tg_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

void tg_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

void tg_pktmbuf_free_bulk(struct rte_mbuf **m, unsigned int n)
{
	rte_pktmbuf_free_bulk(m, n);
}

struct rte_mbuf *tg_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int tg_errno(void)
{
	return rte_errno;
}

unsigned int tg_lcore_id(void)
{
	return rte_lcore_id();
}

/* A large table on the heap (not in DPDK's memory): `len` bytes (a multiple of
 * 2 MiB) of anonymous memory, 2 MiB aligned, zero until written, with transparent
 * huge pages asked for before any page is touched (madvise(MADV_HUGEPAGE)).
 * NULL if the kernel has no memory; *huge says whether the advice was taken. */
void *tg_table_map(size_t len, int *huge)
{
	const size_t h = (size_t)2 << 20;
	if (len > SIZE_MAX - h)
		return NULL;
	size_t span = len + h;
	uint8_t *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	uintptr_t a = ((uintptr_t)p + h - 1) & ~(uintptr_t)(h - 1);
	size_t head = a - (uintptr_t)p;
	if (head)
		munmap(p, head);
	if (span - head - len)
		munmap((uint8_t *)a + len, span - head - len);
	*huge = madvise((void *)a, len, MADV_HUGEPAGE) == 0;
	return (void *)a;
}

void tg_table_unmap(void *p, size_t len)
{
	munmap(p, len);
}

uint64_t tg_tsc_hz(void)
{
	return rte_get_tsc_hz();
}

uint64_t tg_rdtsc(void)
{
	return rte_rdtsc();
}

struct tg_port_info {
	char driver[32];
	uint16_t max_rx_queues;
	uint16_t max_tx_queues;
	uint64_t rss_offloads;
	uint8_t hash_key_size;
};

int tg_port_info(uint16_t port, struct tg_port_info *out)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	memset(out, 0, sizeof(*out));
	if (info.driver_name)
		strncpy(out->driver, info.driver_name, sizeof(out->driver) - 1);
	out->max_rx_queues = info.max_rx_queues;
	out->max_tx_queues = info.max_tx_queues;
	out->rss_offloads = info.flow_type_rss_offloads;
	out->hash_key_size = info.hash_key_size;
	return 0;
}

/*
 * Configure a port. With rss != 0 and more than one RX queue, RSS is enabled over
 * IP/TCP/UDP with the given key (a symmetric key makes both directions of a flow hash
 * alike); hash types the device does not support are masked off.
 */
int tg_port_configure(uint16_t port, uint16_t nb_rxq, uint16_t nb_txq, int rss,
		      uint8_t *rss_key, uint8_t rss_key_len, uint64_t *rss_hf_out)
{
	struct rte_eth_conf conf;
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc != 0)
		return rc;
	memset(&conf, 0, sizeof(conf));
	*rss_hf_out = 0;
	if (rss && nb_rxq > 1) {
		uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) &
			      info.flow_type_rss_offloads;
		if (hf != 0) {
			conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
			conf.rx_adv_conf.rss_conf.rss_hf = hf;
			if (rss_key && rss_key_len && info.hash_key_size == rss_key_len) {
				conf.rx_adv_conf.rss_conf.rss_key = rss_key;
				conf.rx_adv_conf.rss_conf.rss_key_len = rss_key_len;
			}
			*rss_hf_out = hf;
		}
	}
	return rte_eth_dev_configure(port, nb_rxq, nb_txq, &conf);
}

int tg_port_link(uint16_t port, uint32_t *speed_mbps, int *up)
{
	struct rte_eth_link link;
	int rc = rte_eth_link_get_nowait(port, &link);
	if (rc != 0)
		return rc;
	*speed_mbps = link.link_speed;
	*up = link.link_status == RTE_ETH_LINK_UP;
	return 0;
}

struct tg_port_stats {
	uint64_t ipackets;
	uint64_t opackets;
	uint64_t ibytes;
	uint64_t obytes;
	uint64_t imissed;
	uint64_t ierrors;
	uint64_t oerrors;
	uint64_t rx_nombuf;
};

int tg_port_stats(uint16_t port, struct tg_port_stats *out)
{
	struct rte_eth_stats st;
	int rc = rte_eth_stats_get(port, &st);
	if (rc != 0)
		return rc;
	out->ipackets = st.ipackets;
	out->opackets = st.opackets;
	out->ibytes = st.ibytes;
	out->obytes = st.obytes;
	out->imissed = st.imissed;
	out->ierrors = st.ierrors;
	out->oerrors = st.oerrors;
	out->rx_nombuf = st.rx_nombuf;
	return 0;
}
