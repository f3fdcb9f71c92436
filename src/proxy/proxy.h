/* nrbc proxy: the SSH front door. */
#ifndef NRBC_PROXY_H
#define NRBC_PROXY_H

int proxy_main(int argc, char **argv);

#endif
