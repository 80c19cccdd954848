/* LeMoNPC public C API: what a game links against. Stable and versioned.
 * (The runtime API — NPC sessions, memory — lands here as it is built.) */
#ifndef LEMONPC_H
#define LEMONPC_H

#define LEMONPC_VERSION_MAJOR 0
#define LEMONPC_VERSION_MINOR 1
#define LEMONPC_VERSION_PATCH 0
#define LEMONPC_VERSION "0.1.0"

#endif
