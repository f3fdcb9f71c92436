/* proxy_pipebuf: what the queues hold is what their shared budget counts,
 * through growth, partial consumption and release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/proxy_pipebuf.h"

static void put(struct proxy_pipebuf *p, const char *data, size_t n)
{
	size_t space = 0;
	char *tail = proxy_pipebuf_reserve(p, n, &space);

	assert_non_null(tail);
	assert_int_equal(space, n);
	memcpy(tail, data, n);
	p->len += n;
}

static void test_budget_follows_capacity(void **state)
{
	struct proxy_pipebuf_budget budget = { .limit = 64 };
	struct proxy_pipebuf a = { .budget = &budget }, b = { .budget = &budget };

	put(&a, "0123456789", 10);
	put(&b, "abcdefghijklmnopqrstuvwxyz", 26);
	assert_int_equal(budget.held, 36);
	assert_false(proxy_pipebuf_budget_full(&budget));
	put(&a, "0123456789012345678901234567890", 31); /* grows a to 41 */
	assert_int_equal(budget.held, 67);
	assert_true(proxy_pipebuf_budget_full(&budget));
	/* Consuming part of a queue frees nothing yet ... */
	proxy_pipebuf_consume(&a, 5);
	assert_int_equal(budget.held, 67);
	/* ... emptying it frees all it had. */
	proxy_pipebuf_consume(&a, a.len);
	assert_null(a.data);
	assert_int_equal(budget.held, 26);
	assert_false(proxy_pipebuf_budget_full(&budget));
	assert_ptr_equal(a.budget, &budget); /* reusable, still counted */
	proxy_pipebuf_finish(&b);
	assert_int_equal(budget.held, 0);
	assert_int_equal(budget.peak, 67);
}

static void test_no_budget_and_no_limit(void **state)
{
	struct proxy_pipebuf p = { 0 };
	struct proxy_pipebuf_budget unlimited = { .limit = 0, .held = 1u << 30 };

	put(&p, "x", 1);
	proxy_pipebuf_finish(&p);
	assert_false(proxy_pipebuf_budget_full(NULL));
	assert_false(proxy_pipebuf_budget_full(&unlimited));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_budget_follows_capacity),
		cmocka_unit_test(test_no_budget_and_no_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
