/*
 * The delivery protocol of SPEC §7 and §9, from the citizen's press to the platform's
 * store, as a Promela model for spin. docs/model/README.md says which code each step
 * stands for and how to run the check; tests/test_model.py runs it.
 *
 * Claims checked:
 *   - a rating is counted at most once by the platform (assert in platform_store);
 *   - the device forgets a rating only once the platform has it (assert on removal);
 *   - when nothing can move any more, every rating the citizen was thanked for is
 *     stored at the platform and gone from the device's outbox (the Checker process);
 * whatever party crashes at whatever step, and whatever message a dropped connection
 * loses or a redelivery repeats, within a budget of FAULTS faults.
 *
 * Build options (spin -D…):
 *   HALL          a hall broker bridged to the city broker (SPEC §12); else one broker
 *   BROKEN_PUBACK the device forgets a rating when the broker acknowledges it (PUBACK)
 *                 instead of on the platform's receipt: must fail
 *   BROKEN_DEDUP  the platform counts every record it is posted: must fail
 *   BROKEN_ID_ONLY two devices' ratings share a rating_id and the platform de-duplicates
 *                 by rating_id alone (SPEC §9 as first written): must fail
 *   BROKEN_ACK_FIRST the bridge acknowledges the MQTT message before the platform has
 *                 answered: still correct, because the device resends (end to end)
 */

#define N 2                 /* ratings the citizen was thanked for: two are enough to
                               interleave; ANY and choose below are written for two */
#ifndef FAULTS
#define FAULTS 5            /* crashes, dropped connections and lost answers, all parties
                               together, anywhere in a run */
#endif

byte faults = 0;
#define CAN_FAIL (faults < FAULTS)

bool outbox[N];             /* device: fsync'ed before the thanks screen */
byte stored[N];             /* platform: times the rating was counted */
bool seen[N];               /* platform: the de-duplication keys it has stored */

/* The two ratings come from two devices. With BROKEN_ID_ONLY they carry the same
   rating_id (a collision, or a device copying another's) and the platform keys its
   de-duplication by rating_id alone; otherwise by (device_id, rating_id). */
#ifdef BROKEN_ID_ONLY
#define KEY(r) 0
#else
#define KEY(r) r
#endif

chan dev_pub = [N] of { byte };     /* PUBLISH rating, device -> (hall) broker, in TCP */
#ifdef HALL
bool hall_q[N];             /* hall broker: queued for the bridge link to the city */
#endif
bool held[N];               /* city broker: in the bridge's persistent session, un-acked */
bool subscribed = true;     /* the bridge's subscription exists at the city broker */
chan to_bridge = [N] of { byte };   /* deliveries in flight, broker -> bridge */
bool bridge_has[N];         /* bridge: received, platform not yet answered */
chan receipt = [N] of { byte };     /* receipt in flight, bridge -> broker(s) -> device */

#ifdef HALL
#define IN_HALL(r) hall_q[r]
#else
#define IN_HALL(r) false
#endif

/* Some rating i satisfies P(i); choose one of those, nondeterministically. (A guard
   after `select` would commit a do-branch before its guard holds.) */
#define ANY(P) (P(0) || P(1))
#define CHOOSE(P) if :: P(0) -> r = 0 :: P(1) -> r = 1 fi

/* A copy of rating r is somewhere between the device and the platform's answer. */
#define IN_FLIGHT(r) (dev_pub??[eval(r)] || IN_HALL(r) || held[r] || \
                      to_bridge??[eval(r)] || bridge_has[r] || receipt??[eval(r)])

inline platform_store(r) {
#ifdef BROKEN_DEDUP
    stored[r]++;
#else
    if
    :: !seen[KEY(r)] -> seen[KEY(r)] = true; stored[r]++   /* accepted */
    :: else -> skip                        /* duplicate: answered, nothing stored */
    fi;
#endif
    assert(stored[r] <= 1)
}

/* The broker takes a message for the bridge's session; without the subscription (a
   restarted mosquitto does not restore $share subscriptions) nobody gets it. */
inline broker_accept(r) {
    if
    :: subscribed -> held[r] = true
    :: else -> skip
    fi
}

inline drain(ch) {
    do
    :: nempty(ch) -> ch?_
    :: empty(ch) -> break
    od
}

#define LOST(i) (outbox[i] && !IN_FLIGHT(i))

active proctype Device() {
    byte r;
    for (r : 0 .. N-1) { outbox[r] = true }   /* thanked: already durable */
end:
    do
    /* publish on connect, and again after resend_after_s without a receipt: modelled as
       "when no copy is in flight any more", the only case in which it matters */
    :: atomic { ANY(LOST) -> CHOOSE(LOST); dev_pub!r }
    :: atomic { receipt?r ->
           if
           :: outbox[r] -> assert(stored[r] == 1); outbox[r] = false
           :: else -> skip                  /* a repeated receipt, or not ours */
           fi }
    :: atomic { CAN_FAIL -> faults++; drain(dev_pub); drain(receipt) }  /* link drops */
    od
}

#ifdef HALL
#define QUEUED(i) hall_q[i]

active proctype HallBroker() {
    byte r;
end:
    do
    :: atomic { dev_pub?r -> hall_q[r] = true
#ifdef BROKEN_PUBACK
           ; outbox[r] = false
#endif
       }
    :: atomic { dev_pub?<r> -> hall_q[r] = true }   /* the same PUBLISH again (DUP) */
    /* the bridge connection to the city forwards a queued message (QoS 1) */
    :: atomic { ANY(QUEUED) -> CHOOSE(QUEUED); broker_accept(r); hall_q[r] = false }
    /* the hall broker dies: what autosave had not written is gone */
    :: atomic { CAN_FAIL -> faults++; drain(dev_pub);
           for (r : 0 .. N-1) { if :: hall_q[r] = false :: skip fi } }
    od
}
#endif

#define DELIVERABLE(i) (held[i] && !to_bridge??[eval(i)])

active proctype CityBroker() {
    byte r;
end:
    do
#ifndef HALL
    :: atomic { dev_pub?r -> broker_accept(r)
#ifdef BROKEN_PUBACK
           ; outbox[r] = false
#endif
       }
    :: atomic { dev_pub?<r> -> broker_accept(r) }   /* the same PUBLISH again (DUP) */
#endif
    /* deliver a held message (again, after a reconnect or a redelivery) */
    :: atomic { ANY(DELIVERABLE) -> CHOOSE(DELIVERABLE); to_bridge!r }
    /* the city broker dies and comes back: un-saved sessions lost, $share subscriptions
       not restored, connections dropped */
    :: atomic { CAN_FAIL -> faults++; subscribed = false; drain(to_bridge);
#ifndef HALL
           drain(dev_pub);
#endif
           for (r : 0 .. N-1) { if :: held[r] = false :: skip fi } }
    od
}

#define RECEIVED(i) bridge_has[i]

active proctype Bridge() {
    byte r;
end:
    do
    :: atomic { to_bridge?r -> bridge_has[r] = true
#ifdef BROKEN_ACK_FIRST
           ; held[r] = false
#endif
       }
    /* POST the batch; the platform commits, then answers */
    :: atomic { ANY(RECEIVED) -> CHOOSE(RECEIVED); platform_store(r);
           if
           :: true -> receipt!r; held[r] = false; bridge_has[r] = false  /* answer read:
                                                      receipt published, message acked */
           :: CAN_FAIL -> faults++                  /* answer lost: retry the same batch */
           fi }
    /* the bridge dies, or its broker connection drops; on return it subscribes again */
    :: atomic { CAN_FAIL -> faults++; drain(to_bridge);
           for (r : 0 .. N-1) { bridge_has[r] = false } }
    :: atomic { !subscribed -> subscribed = true }
    od
}

/* When nothing can move any more, every thanked rating is at the platform, once, and
   the device has let it go. */
active proctype Checker() {
    byte r;
    timeout ->
    for (r : 0 .. N-1) { assert(stored[r] == 1 && !outbox[r]) }
}
