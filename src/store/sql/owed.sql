select greatest(coalesce(d.off_at_seq, sub.last_seq) - d.cursor, 0)
         + (select count(*) from delivery_parked p where p.subscription_id = d.subscription_id
            and p.destination = d.destination and p.provider = d.provider and p.state = 'retry') as waiting,
       least(
         (select e.recorded_at from audit_events e
          where e.subscription_id = d.subscription_id and e.seq = d.cursor + 1
            and d.cursor < coalesce(d.off_at_seq, sub.last_seq)),
         (select e.recorded_at from delivery_parked p join audit_events e
            on e.subscription_id = p.subscription_id and e.seq = p.seq
          where p.subscription_id = d.subscription_id and p.destination = d.destination
            and p.provider = d.provider and p.state = 'retry' order by p.seq limit 1)) as oldest
from delivery_destinations d join subscriptions sub on sub.id = d.subscription_id
where d.subscription_id = $1 and d.provider = $2 and d.destination = $3
