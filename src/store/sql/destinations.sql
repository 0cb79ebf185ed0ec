select s.destination, s.name, s.provider, s.enabled, s.updated_at,
       d.status as "status?", coalesce(d.paused_reason is not null, false) as "paused!",
       coalesce(greatest(coalesce(d.off_at_seq, sub.last_seq) - d.cursor, 0)
                + (select count(*) from delivery_parked p
                   where p.subscription_id = d.subscription_id and p.destination = d.destination
                     and p.provider = d.provider and p.state = 'retry'), 0) as "owed!"
from siem_settings s
join subscriptions sub on sub.id = s.subscription_id
left join delivery_destinations d
  on d.subscription_id = s.subscription_id and d.destination = s.destination
 and d.provider = s.provider
where s.subscription_id = $1
order by s.destination
