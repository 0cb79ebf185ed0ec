select e.seq, e.id, e.event_id, e.occurred_at, e.recorded_at, e.actor,
       p.state as "parked_state?", p.reason as parked_reason
from audit_events e
left join delivery_parked p
  on p.subscription_id = e.subscription_id and p.destination = $6 and p.provider = $2
 and p.seq = e.seq
where e.subscription_id = $1 and e.seq < coalesce($3::bigint, 9223372036854775807)
  and ($4::int[] is null)
order by e.seq desc limit $5
